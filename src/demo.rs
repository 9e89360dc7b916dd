//! `xrayd demo`: sends one well-formed demo segment over UDP, the way an X-Ray SDK does, so that
//! an installation can be tried with nothing but xrayd itself (no `nc`, no SDK).
//!
//! The segment is current (its trace id carries the present epoch second, as X-Ray requires) and
//! its ids are fresh for every call, so X-Ray stores each one it is sent.

use std::hash::{BuildHasher, Hasher};
use std::net::{ToSocketAddrs, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::args::{self, Flag, options_help};
use crate::config::flags::USAGE_WIDTH;

/// Where the demo segment goes unless `--address` says otherwise: the daemon's default `-b`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:2000";

/// The header line the SDKs send before every segment.
pub const HEADER: &str = "{\"format\": \"json\", \"version\": 1}\n";

/// Name of the demo segment's service.
pub const DEMO_NAME: &str = "xrayd-demo";

/// A demo segment's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoIds {
    /// `1-<8 hex digits of the epoch second>-<24 hex digits>`.
    pub trace_id: String,
    /// 16 hex digits.
    pub id: String,
}

impl DemoIds {
    /// Ids for a segment that starts at `now`, from 160 random bits.
    pub fn new(now: SystemTime, random: [u64; 3]) -> DemoIds {
        let epoch = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        DemoIds {
            trace_id: format!(
                "1-{:08x}-{:08x}{:016x}",
                epoch & 0xffff_ffff,
                random[0] & 0xffff_ffff,
                random[1]
            ),
            id: format!("{:016x}", random[2]),
        }
    }
}

/// The datagram an SDK would send for a 50 ms segment ending at `now`: header line, newline, JSON.
pub fn datagram(ids: &DemoIds, now: SystemTime) -> Vec<u8> {
    let end = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let doc = format!(
        "{{\"name\":\"{DEMO_NAME}\",\"id\":\"{}\",\"trace_id\":\"{}\",\"start_time\":{:.6},\
         \"end_time\":{:.6},\"annotations\":{{\"sent_by\":\"xrayd demo\"}}}}",
        ids.id,
        ids.trace_id,
        end - 0.05,
        end
    );
    let mut out = Vec::with_capacity(HEADER.len() + doc.len());
    out.extend_from_slice(HEADER.as_bytes());
    out.extend_from_slice(doc.as_bytes());
    out
}

/// Random words from the standard library's per-process random hash keys.
fn random_words() -> [u64; 3] {
    let state = std::collections::hash_map::RandomState::new();
    let mut words = [0u64; 3];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        *w = h.finish();
    }
    words
}

/// `xrayd demo`'s flags.
const FLAGS: &[Flag] = &[
    Flag::value(
        "address",
        "HOST:PORT",
        "Where the daemon listens for segments (its -b). Default: 127.0.0.1:2000.",
    )
    .short("a"),
    Flag::switch("help", "Print this help and exit.").short("h"),
];

fn usage() -> String {
    format!(
        "Usage: xrayd demo [--address HOST:PORT]\n\n\
         Sends one current demo segment over UDP, as an X-Ray SDK does, and prints its ids.\n\n{}",
        options_help(FLAGS, USAGE_WIDTH)
    )
}

/// `xrayd demo [--address HOST:PORT]`; returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let parsed = match args::parse(FLAGS, args.into_iter().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}\n{}", e.0, usage());
            return 2;
        }
    };
    if parsed.is_set("help") {
        print!("{}", usage());
        return 0;
    }
    if let Some(extra) = parsed.rest.first() {
        eprintln!("unexpected argument: {extra}\n{}", usage());
        return 2;
    }
    let address = parsed.get("address").unwrap_or(DEFAULT_ADDRESS);
    match send(address) {
        Ok(ids) => {
            println!(
                "Sent a demo segment ({DEMO_NAME}) to {address}: trace id {}, segment id {}",
                ids.trace_id, ids.id
            );
            0
        }
        Err(e) => {
            eprintln!("xrayd demo: {e}");
            1
        }
    }
}

/// Sends one demo segment to `address`; returns its ids.
pub fn send(address: &str) -> Result<DemoIds, String> {
    let target = address
        .to_socket_addrs()
        .map_err(|e| format!("--address {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("--address {address}: no address found"))?;
    let local = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let now = SystemTime::now();
    let ids = DemoIds::new(now, random_words());
    socket
        .send_to(&datagram(&ids, now), target)
        .map_err(|e| format!("cannot send to {target}: {e}"))?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::datagram::{Validator, Verdict};
    use std::time::Duration;

    const NOW: u64 = 1_790_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn trace_id_carries_the_epoch_and_ids_have_x_ray_shapes() {
        let ids = DemoIds::new(at(NOW), [0x1234_5678_9abc_def0, 7, u64::MAX]);
        assert_eq!(
            ids.trace_id,
            format!("1-{NOW:08x}-9abcdef00000000000000007")
        );
        assert_eq!(ids.id, "ffffffffffffffff");
        assert_eq!(ids.trace_id.len(), 35);
    }

    #[test]
    fn the_datagram_is_one_the_daemon_accepts_byte_exact() {
        let ids = DemoIds::new(at(NOW), [1, 2, 3]);
        let d = datagram(&ids, at(NOW));
        let mut v = Validator::new();
        let Verdict::Accepted(doc) = v.check(&d, false) else {
            panic!("rejected: {}", String::from_utf8_lossy(&d));
        };
        let doc = std::str::from_utf8(doc).unwrap();
        assert!(
            doc.contains(&format!("\"trace_id\":\"{}\"", ids.trace_id)),
            "{doc}"
        );
        assert!(doc.contains(&format!("\"end_time\":{NOW}.000000")), "{doc}");
        assert!(
            doc.contains(&format!("\"start_time\":{}.950000", NOW - 1)),
            "{doc}"
        );
    }

    #[test]
    fn every_call_gets_fresh_ids() {
        let a = random_words();
        let b = random_words();
        assert_ne!(a, b);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn sends_one_datagram_to_the_address() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let ids = send(&rx.local_addr().unwrap().to_string()).unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with(HEADER), "{got}");
        assert!(got.contains(&ids.id), "{got}");
    }

    #[test]
    fn help_fits_the_width_and_flags_are_checked() {
        assert!(
            usage().lines().all(|l| l.len() <= USAGE_WIDTH),
            "{}",
            usage()
        );
        assert!(usage().contains("--address HOST:PORT"));
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(main(args(&["demo", "--bogus"])), 2);
        assert_eq!(main(args(&["demo", "stray"])), 2);
        assert_eq!(main(args(&["demo", "--address"])), 2);
        assert_eq!(main(args(&["demo", "--address", "not an address"])), 1);
    }

    #[test]
    fn a_bad_address_is_a_clear_error() {
        let e = send("not an address").unwrap_err();
        assert!(e.starts_with("--address not an address: "), "{e}");
    }
}

//! Health: what `/readyz` checks, and `xrayd health`, a probe of `/healthz` (or `/readyz`) for
//! exec health checks in images without a shell.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::args::{self, Flag, options_help};
use crate::config::flags::USAGE_WIDTH;

/// What `/readyz` says instead of why credentials are missing (the detail is logged).
pub const SEE_LOG: &str = "see the daemon's log for why";

/// What readiness is judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyInputs {
    /// UDP ingest is running.
    pub ingest_running: bool,
    /// Credentials are available (always `Ok` with a local sink); `Err`: why not.
    pub credentials: Result<(), String>,
    /// How long deliveries have been failing without a success in between.
    pub upload_failing_for: Option<Duration>,
    /// Longest failure streak that is still ready.
    pub threshold: Duration,
}

/// `Ok` when ready to take segments, else every reason why not.
pub fn readiness(i: &ReadyInputs) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if !i.ingest_running {
        why.push("UDP ingest is not running".to_string());
    }
    if let Err(e) = &i.credentials {
        why.push(format!("no AWS credentials: {e}"));
    }
    if let Some(d) = i.upload_failing_for
        && d > i.threshold
    {
        why.push(format!(
            "uploads to X-Ray have been failing for {:.0} seconds (threshold {:.0} seconds)",
            d.as_secs_f64(),
            i.threshold.as_secs_f64()
        ));
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

/// `xrayd health`'s flags.
const FLAGS: &[Flag] = &[
    Flag::value(
        "tcp",
        "ADDR",
        "Address of xrayd's TCP port (-t). Default: 127.0.0.1:2000; an unspecified address \
         (0.0.0.0, [::]) is probed on loopback.",
    )
    .short("t"),
    Flag::switch(
        "ready",
        "Probe /readyz (ready to take segments) instead of /healthz (alive).",
    ),
    Flag::value(
        "timeout",
        "DURATION",
        "Time allowed for the whole probe (e.g. 2s, 500ms). Default: 2s.",
    ),
    Flag::switch("help", "Print this help and exit.").short("h"),
];

fn usage() -> String {
    format!(
        "Usage: xrayd health [--tcp ADDR] [--ready] [--timeout DURATION]\n\n\
         Probes xrayd's TCP port and exits 0 when it answers 200, 1 otherwise.\n\n{}",
        options_help(FLAGS, USAGE_WIDTH)
    )
}

/// Probe options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    addr: String,
    path: &'static str,
    timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Option<Probe>, String> {
    let f = args::parse(FLAGS, args.iter().cloned()).map_err(|e| e.0)?;
    if f.is_set("help") {
        return Ok(None);
    }
    if let Some(extra) = f.rest.first() {
        return Err(format!("unexpected argument: {extra}"));
    }
    let timeout = match f.get("timeout") {
        None => Duration::from_secs(2),
        Some(v) => crate::config::parse_duration(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("--timeout: {v:?} is not a duration; use e.g. 2s"))?,
    };
    Ok(Some(Probe {
        addr: f.get("tcp").unwrap_or("127.0.0.1:2000").to_string(),
        path: if f.is_set("ready") {
            "/readyz"
        } else {
            "/healthz"
        },
        timeout,
    }))
}

/// The address to connect to: an unspecified bind address means loopback of its family.
fn target(addr: &str) -> Result<SocketAddr, String> {
    let a = addr
        .to_socket_addrs()
        .map_err(|e| format!("--tcp {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--tcp {addr:?}: no address"))?;
    Ok(match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), a.port())
        }
        _ => a,
    })
}

/// One `GET` with `Connection: close`; returns the status and the body (trimmed, first line).
fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(left()))
        .map_err(|e| e.to_string())?;
    let host = addr.to_string();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xrayd-health\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                if buf.is_empty() {
                    return Err(format!("read: {e}"));
                }
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `xrayd health [--tcp ADDR] [--ready] [--timeout D]`: exit code 0 when the probe answers 200,
/// 1 otherwise, 2 for bad arguments. `args` may start with `health`.
pub fn main(args: Vec<String>) -> i32 {
    let args: &[String] = match args.first() {
        Some(a) if a == "health" => &args[1..],
        _ => &args,
    };
    let probe = match parse_args(args) {
        Ok(Some(p)) => p,
        Ok(None) => {
            print!("{}", usage());
            return 0;
        }
        Err(e) => {
            eprintln!("xrayd health: {e}\n{}", usage());
            return 2;
        }
    };
    let addr = match target(&probe.addr) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xrayd health: {e}");
            return 1;
        }
    };
    match get(addr, probe.path, probe.timeout) {
        Ok((200, body)) => {
            println!("xrayd health: GET {} on {addr}: 200 {body}", probe.path);
            0
        }
        Ok((status, body)) => {
            eprintln!(
                "xrayd health: GET {} on {addr}: {status} {body}",
                probe.path
            );
            1
        }
        Err(e) => {
            eprintln!("xrayd health: GET {} on {addr} failed: {e}", probe.path);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn readiness_reasons() {
        let ok = ReadyInputs {
            ingest_running: true,
            credentials: Ok(()),
            upload_failing_for: Some(Duration::from_secs(5)),
            threshold: Duration::from_secs(10),
        };
        assert_eq!(readiness(&ok), Ok(()));
        let bad = ReadyInputs {
            ingest_running: false,
            credentials: Err("none".into()),
            upload_failing_for: Some(Duration::from_secs(11)),
            ..ok
        };
        let why = readiness(&bad).unwrap_err();
        assert_eq!(why.len(), 3, "{why:?}");
        assert!(
            why[2].contains("failing for 11 seconds (threshold 10 seconds)"),
            "{why:?}"
        );
    }

    #[test]
    fn probe_arguments() {
        let p = parse_args(&args(&[])).unwrap().unwrap();
        assert_eq!((p.addr.as_str(), p.path), ("127.0.0.1:2000", "/healthz"));
        let p = parse_args(&args(&["--tcp", "[::1]:2001", "--ready", "-timeout=500ms"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.addr.as_str(), p.path, p.timeout),
            ("[::1]:2001", "/readyz", Duration::from_millis(500))
        );
        assert_eq!(
            parse_args(&args(&["-tcp=h:1"])).unwrap().unwrap().addr,
            "h:1"
        );
        assert!(parse_args(&args(&["--tcp"])).is_err());
        assert!(parse_args(&args(&["--nope"])).is_err());
        assert!(parse_args(&args(&["extra"])).is_err());
        assert_eq!(parse_args(&args(&["-h"])), Ok(None));
        assert_eq!(
            parse_args(&args(&["-t", "h:2"])).unwrap().unwrap().addr,
            "h:2"
        );
        assert!(parse_args(&args(&["--timeout", "0s"])).is_err());
        assert!(parse_args(&args(&["--timeout", "soon"])).is_err());
        assert!(usage().lines().all(|l| l.len() <= USAGE_WIDTH));
        assert_eq!(main(args(&["health", "--bogus"])), 2);
    }

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0:2000").unwrap(),
            "127.0.0.1:2000".parse().unwrap()
        );
        assert_eq!(target("[::]:2000").unwrap(), "[::1]:2000".parse().unwrap());
        assert_eq!(target("10.1.2.3:9").unwrap(), "10.1.2.3:9".parse().unwrap());
    }

    #[test]
    fn nothing_listening_is_unhealthy() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert_eq!(main(args(&["--tcp", &addr, "--timeout", "1s"])), 1);
    }
}

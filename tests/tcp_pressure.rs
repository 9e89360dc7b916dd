//! The real daemon's TCP port under pressure from its own pod: many connections holding large
//! unfinished requests (memory stays within the budget plus a fixed overhead), and idle,
//! slowloris and slow-upstream clients under an open-files limit of 1,024 (`/healthz` and
//! `/readyz` keep answering). Figures are printed (`--nocapture` shows them).

use xrayd_kit as support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::daemon::server_side;
use support::{Daemon, FakeXray, one_shot, poll_until, secs};

/// A `VmRSS` / `VmHWM`-style field of /proc/<pid>/status, in bytes.
fn vm(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad {line:?}"));
    kib * 1024
}

/// The test opens more sockets than the common soft limit allows.
fn enough_fds(test: &str, need: u64) -> bool {
    xrayd::proxy::raise_fd_limit();
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    if !ok || r.rlim_cur < need {
        support::skip(
            test,
            &format!(
                "the test needs {need} open files, the limit is {}",
                r.rlim_cur
            ),
        );
        return false;
    }
    true
}

/// Unfinished chunked request: 150 one-byte chunks with 900-byte extensions (~137 KB on the
/// wire, within the framing the port accepts), no last chunk.
fn partial_chunked_request() -> Vec<u8> {
    let mut raw = b"POST /SamplingTargets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..150 {
        raw.extend_from_slice(format!("1;pad={}\r\n \r\n", "e".repeat(900)).as_bytes());
    }
    raw
}

#[test]
fn memory_stays_within_the_budget_under_many_large_unfinished_requests() {
    const CONNS: usize = 1000;
    if !enough_fds(
        "memory_stays_within_the_budget_under_many_large_unfinished_requests",
        CONNS as u64 + 200,
    ) {
        return;
    }
    let fake = FakeXray::start();
    let request = Arc::new(partial_chunked_request());
    for budget_mib in [3u64, 16, 64] {
        let budget = budget_mib.to_string();
        let d = Daemon::for_endpoint(&fake.endpoint(), &["-m", &budget], true);
        let tcp = d.tcp_addr();
        assert_eq!(one_shot(tcp, "GET", "/healthz", b"").status, 200);
        let pid = d.pid();
        let idle_rss = vm(pid, "VmRSS:");
        // 8 writers, each opening its share of the connections and sending the unfinished
        // request on each (a refused connection may reset: write errors are expected).
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let request = request.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..CONNS / 8 {
                        let Ok(mut s) = TcpStream::connect_timeout(&tcp, secs(10)) else {
                            continue;
                        };
                        let _ = s.set_write_timeout(Some(secs(10)));
                        let _ = s.write_all(&request);
                        held.push(s);
                    }
                    held
                })
            })
            .collect();
        let held: Vec<TcpStream> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        // Everything sent has been read by the daemon (or its connection refused and closed).
        let (open, _) = poll_until(
            secs(60),
            || {
                format!(
                    "the daemon did not read everything: {:?}",
                    server_side(tcp.port())
                )
            },
            || Some(server_side(tcp.port())).filter(|(_, unread)| *unread == 0),
        );
        let r = one_shot(tcp, "GET", "/healthz", b"");
        assert_eq!(r.status, 200, "healthz while the requests are held");
        let peak = vm(pid, "VmHWM:");
        let held_rss = vm(pid, "VmRSS:");
        drop(held);
        poll_until(
            secs(30),
            || "the daemon kept the closed connections".into(),
            || (server_side(tcp.port()).0 == 0).then_some(()),
        );
        // A request after the closes makes sure the loop has handled them.
        assert_eq!(one_shot(tcp, "GET", "/healthz", b"").status, 200);
        let after = vm(pid, "VmRSS:");
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "-m {budget_mib}: idle RSS {:.1} MiB; {CONNS} connections x {} KB unfinished: {open} kept open, RSS {:.1} MiB, peak (VmHWM) {:.1} MiB; after closing: RSS {:.1} MiB",
            mib(idle_rss),
            request.len() / 1000,
            mib(held_rss),
            mib(peak),
            mib(after)
        );
        let bound = (budget_mib + 16) << 20;
        assert!(
            peak <= bound,
            "-m {budget_mib}: peak RSS {:.1} MiB above budget + 16 MiB",
            mib(peak)
        );
        // Buffers are given back: what is left above the idle daemon is small.
        assert!(
            after <= idle_rss + (8 << 20),
            "-m {budget_mib}: RSS {:.1} MiB after the connections closed (idle {:.1} MiB)",
            mib(after),
            mib(idle_rss)
        );
    }
}

/// Opens `n` connections, each sending one `GetSamplingRules` call; returns those that connected
/// and sent it (their answers unread).
fn sampling_calls(tcp: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect_timeout(&tcp, secs(5)).ok()?;
            s.write_all(
                b"POST /GetSamplingRules HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
            )
            .ok()?;
            Some(s)
        })
        .collect()
}

/// Lowers the daemon's open-files limit (soft and hard) as `ulimit -n` would have.
fn limit_open_files(pid: u32, n: u64) {
    let r = libc::rlimit {
        rlim_cur: n as libc::rlim_t,
        rlim_max: n as libc::rlim_t,
    };
    // SAFETY: prlimit only reads the rlimit we own; a null old-limit pointer is allowed.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &r,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// One probe on a new connection: status, body, time to the whole answer.
fn probe(addr: SocketAddr, path: &str) -> Result<(u16, String, Duration), String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, secs(3)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(secs(3))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Ok((status, body.unwrap_or_default(), took))
}

/// Probes `/healthz` and `/readyz` five times each; every one must answer 200 (within 3 s),
/// and most within 100 ms (the rest leaves room for a loaded CI machine). Returns the slowest.
fn health_answers(addr: SocketAddr, what: &str, d: &Daemon) -> Duration {
    let mut times = Vec::new();
    for _ in 0..5 {
        for (path, want) in [("/healthz", "ok\n"), ("/readyz", "ready\n")] {
            let (status, body, took) = probe(addr, path)
                .unwrap_or_else(|e| panic!("{what}: {path} failed: {e}\n{}", d.log()));
            assert_eq!((status, body.as_str()), (200, want), "{what}: {path}");
            times.push(took);
        }
    }
    times.sort();
    let fast = times
        .iter()
        .filter(|t| **t <= Duration::from_millis(100))
        .count();
    println!(
        "{what}: /healthz and /readyz answered 200 in {:.1} ms (median), {:.1} ms (slowest of {})",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        times.len()
    );
    assert!(fast * 10 >= times.len() * 8, "{what}: too slow: {times:?}");
    times[times.len() - 1]
}

#[test]
fn health_answers_whatever_the_port_goes_through_under_an_open_files_limit_of_1024() {
    if !enough_fds(
        "health_answers_whatever_the_port_goes_through_under_an_open_files_limit_of_1024",
        2500,
    ) {
        return;
    }
    let fake = FakeXray::start();
    let d = Daemon::for_endpoint(&fake.endpoint(), &[], true);
    let tcp = d.tcp_addr();
    poll_until(
        secs(10),
        || d.log(),
        || (one_shot(tcp, "GET", "/readyz", b"").status == 200).then_some(()),
    );
    limit_open_files(d.pid(), 1024);

    // 1,100 idle connections: more than the daemon's descriptors.
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect_timeout(&tcp, secs(5)).ok())
        .collect();
    assert!(idle.len() >= 1000, "only {} connected", idle.len());
    health_answers(tcp, "1,100 idle connections", &d);
    drop(idle);
    // The operator is told, and what to do.
    for what in [
        "out of file descriptors",
        "Raise the open-files limit",
        "closing the longest-idle one",
    ] {
        assert_eq!(d.count_lines(what), 1, "{what}:\n{}", d.log());
    }

    // 500 slowloris clients, one byte at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow: Vec<TcpStream> = (0..500)
        .filter_map(|_| TcpStream::connect_timeout(&tcp, secs(5)).ok())
        .collect();
    let trickle = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let head = b"POST /GetSamplingRules HTTP/1.1\r\nHost: slowloris\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < head.len() {
                for s in &mut slow {
                    let _ = s.write_all(&head[i..i + 1]);
                }
                i += 1;
                // Pacing is the scenario: one byte every 50 ms.
                std::thread::sleep(Duration::from_millis(50));
            }
            slow
        }
    });
    health_answers(tcp, "500 slowloris connections", &d);
    stop.store(true, Ordering::SeqCst);
    drop(trickle.join().unwrap());

    // A slow upstream: every worker busy, the queue full, more calls coming.
    fake.set_delay(Duration::from_secs(3));
    let waiting = sampling_calls(tcp, 300);
    poll_until(
        secs(10),
        || "no call reached the slow upstream".into(),
        || (fake.connections() >= 1).then_some(()),
    );
    health_answers(tcp, "a slow upstream", &d);
    drop(waiting);
}

#[test]
fn answers_nobody_reads_do_not_pile_up_in_memory() {
    const CONNS: usize = 200;
    if !enough_fds(
        "answers_nobody_reads_do_not_pile_up_in_memory",
        CONNS as u64 + 200,
    ) {
        return;
    }
    let fake = FakeXray::start();
    let big = format!(
        "{{\"SamplingRuleRecords\":[],\"NextToken\":\"{}\"}}",
        "n".repeat(512 << 10)
    );
    fake.answer("/GetSamplingRules", 200, &big);
    let d = Daemon::for_endpoint(&fake.endpoint(), &["-m", "16"], true);
    let tcp = d.tcp_addr();
    let idle_rss = vm(d.pid(), "VmRSS:");
    // Each client asks for 512 KB of rules and never reads them.
    let clients = sampling_calls(tcp, CONNS);
    assert_eq!(clients.len(), CONNS);
    // Every answer came back from X-Ray and was handed to its connection.
    poll_until(
        secs(60),
        || format!("{} calls forwarded", fake.seen().len()),
        || {
            let e = support::scrape(tcp);
            (e.get(
                "xrayd_proxy_requests_total",
                &[("path", "/GetSamplingRules"), ("status", "200")],
            ) == Some(CONNS as f64))
            .then_some(())
        },
    );
    let peak = vm(d.pid(), "VmHWM:");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{CONNS} clients not reading 512 KB answers (-m 16): idle RSS {:.1} MiB, peak {:.1} MiB",
        mib(idle_rss),
        mib(peak)
    );
    assert!(peak <= 32 << 20, "peak RSS {:.1} MiB", mib(peak));
    assert_eq!(one_shot(tcp, "GET", "/healthz", b"").status, 200);
    drop(clients);
}

//! Fault matrix: the real xrayd process against FakeXray (or an unreachable endpoint) with the
//! backend failing in each way the issue lists. For every case: what was accepted is delivered
//! (exactly once where the backend answered 2xx and the daemon saw the answer) or counted as
//! dropped with a reason, and the final counts add up:
//! received = rejected + sent + unprocessed + rejected_by_xray + spillover + dropped_at_shutdown,
//! with nothing still held (`segments_held=0`) after the drain.
//!
//! Each case prints one `FAULT-MATRIX |...|` row (run with `--nocapture` to see them).
//! `XRAYD_OUTAGE_SECS` (default 12) sets the length of the outage in `outage_then_recovery`.

use xrayd_kit as support;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::daemon::Daemon;
use support::udp::{Pace, send_segments_paced};
use support::{
    Behaviour, FakeConfig, FakeXray, assert_conserved, document_id, make_segment, millis,
    poll_until, secs, segment_index,
};

/// Safety limit for deliveries (debug builds on a loaded machine).
const DELIVERY: Duration = Duration::from_secs(90);
/// Safety limit for exiting after SIGTERM.
const EXIT: Duration = Duration::from_secs(40);
/// Fast retries so the cases stay short.
const RETRY_ARGS: [&str; 4] = ["--retry-base-delay", "50ms", "--retry-max-delay", "1s"];

fn docs(range: std::ops::Range<u64>, size: usize) -> Vec<String> {
    range.map(|i| make_segment(i, size)).collect()
}

fn c(counts: &HashMap<String, u64>, k: &str) -> u64 {
    *counts
        .get(k)
        .unwrap_or_else(|| panic!("no counter {k:?} in {counts:?}"))
}

/// The conservation law, the rejection reasons adding up, and nothing left held.
fn assert_counts_add_up(counts: &HashMap<String, u64>) {
    assert_conserved(counts);
    let k = |n| c(counts, n);
    assert_eq!(
        k("rejected"),
        k("rejected_no_newline")
            + k("rejected_bad_header")
            + k("rejected_bad_json")
            + k("rejected_too_large"),
        "{counts:?}"
    );
    assert_eq!(
        k("segments_held"),
        0,
        "still buffered after drain: {counts:?}"
    );
}

/// Non-zero `backend_*` counters, e.g. `http_5xx=7`.
fn buckets(counts: &HashMap<String, u64>) -> String {
    let mut v: Vec<String> = counts
        .iter()
        .filter(|(k, n)| k.starts_with("backend_") && **n > 0)
        .map(|(k, n)| format!("{}={n}", &k["backend_".len()..]))
        .collect();
    v.sort();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(" ")
    }
}

fn print_row(case: &str, counts: &HashMap<String, u64>, delivered: usize) {
    let k = |n| c(counts, n);
    println!(
        "FAULT-MATRIX | {case} | received={} | sent={} | delivered_docs={delivered} | dropped: unprocessed={} rejected_by_xray={} spillover={} at_shutdown={} | retries={} | {} |",
        k("received"),
        k("sent"),
        k("unprocessed"),
        k("rejected_by_xray"),
        k("spillover"),
        k("dropped_at_shutdown"),
        k("retries"),
        buckets(counts)
    );
}

/// SIGTERM, exit 0, counts checked.
fn stop(d: &mut Daemon) -> HashMap<String, u64> {
    d.sigterm();
    let status = d.wait_exit(EXIT);
    assert!(status.success(), "xrayd exited with {status:?}");
    let counts = d.final_counts();
    assert_counts_add_up(&counts);
    counts
}

/// xrayd with the standard test command line against any endpoint URL.
fn spawn_for(endpoint: &str, extra: &[&str]) -> Daemon {
    let mut args: Vec<&str> = RETRY_ARGS.to_vec();
    args.extend_from_slice(extra);
    Daemon::for_endpoint_with_level(endpoint, Some("info"), &args, &[])
}

fn spawn_against(fake: &FakeXray, extra: &[&str]) -> Daemon {
    spawn_for(&fake.endpoint(), extra)
}

/// Every document of `want` delivered exactly once, nothing else.
fn assert_exactly_once(fake: &FakeXray, want: &[String], case: &str) {
    let got = fake.delivered_documents();
    let mut n: HashMap<&str, usize> = HashMap::new();
    for d in &got {
        *n.entry(d.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = n
        .iter()
        .filter(|(_, k)| **k > 1)
        .map(|(d, k)| (segment_index(d), *k))
        .take(10)
        .collect();
    let missing: Vec<_> = want
        .iter()
        .filter(|d| !n.contains_key(d.as_str()))
        .map(|d| segment_index(d))
        .take(10)
        .collect();
    let wanted: HashSet<&str> = want.iter().map(String::as_str).collect();
    let extra = got.iter().filter(|d| !wanted.contains(d.as_str())).count();
    assert!(
        dups.is_empty() && missing.is_empty() && extra == 0 && got.len() == want.len(),
        "{case}: delivered {} of {}; duplicated {dups:?}; missing {missing:?}; unexpected {extra}; fake: {}",
        got.len(),
        want.len(),
        fake.summary()
    );
}

/// Wait until the fake holds `n` delivered documents.
fn wait_delivered(fake: &FakeXray, n: usize, case: &str) {
    assert!(
        fake.wait_for_documents(n, DELIVERY),
        "{case}: only {} of {n} documents delivered; fake: {}",
        fake.delivered_count(),
        fake.summary()
    );
}

/// A TCP forwarder on a fixed loopback port, to make an endpoint refuse connections (stopped)
/// and come back (started again on the same port) while the daemon keeps its endpoint URL.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// A free loopback port, closed again (connections to it are refused).
    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn start(port: u16, target: SocketAddr) -> Forwarder {
        // The port of a stopped forwarder can take a moment to be free again.
        let listener = poll_until(
            secs(10),
            || {
                format!(
                    "cannot bind 127.0.0.1:{port} again: {:?}",
                    TcpListener::bind(("127.0.0.1", port)).err()
                )
            },
            || TcpListener::bind(("127.0.0.1", port)).ok(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (st, ss) = (stop.clone(), streams.clone());
        let accept = std::thread::spawn(move || {
            // `shutdown` sets `stop`, then connects once to wake this blocking accept.
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(client) = client {
                    let Ok(server) = TcpStream::connect_timeout(&target, secs(5)) else {
                        continue;
                    };
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            ss.lock().unwrap().push(s);
                        }
                    }
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                }
            }
            // The listener is dropped here: new connections are refused.
        });
        Forwarder {
            port,
            stop,
            streams,
            accept: Some(accept),
        }
    }

    /// Stop accepting and reset every forwarded connection.
    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ =
                TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), secs(5));
            let _ = h.join();
        }
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Script the fake, send `n` documents, wait for them, stop, check exactly-once delivery.
fn scripted_case(
    case: &str,
    script: Vec<Behaviour>,
    n: u64,
    extra: &[&str],
) -> HashMap<String, u64> {
    let fake = FakeXray::start();
    fake.set_script(script);
    let mut d = spawn_against(&fake, extra);
    let addr = d.udp_addr();
    let want = docs(0..n, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    wait_delivered(&fake, want.len(), case);
    let counts = stop(&mut d);
    assert_exactly_once(&fake, &want, case);
    assert_eq!(c(&counts, "received"), n, "{counts:?}");
    assert_eq!(c(&counts, "sent"), n, "{counts:?}");
    assert_eq!(fake.script_remaining(), 0, "{case}: script not consumed");
    print_row(case, &counts, fake.delivered_count());
    counts
}

#[test]
fn http_500_then_recovery() {
    let mut script = vec![Behaviour::server_error(); 5];
    script.extend(vec![Behaviour::service_unavailable(); 2]);
    let counts = scripted_case("500/503 x7", script, 120, &[]);
    assert!(c(&counts, "retries") >= 7, "{counts:?}");
    assert!(c(&counts, "backend_http_5xx") >= 7, "{counts:?}");
}

#[test]
fn throttling_burst() {
    let counts = scripted_case("429 burst x15", vec![Behaviour::throttled(); 15], 150, &[]);
    assert!(c(&counts, "retries") >= 15, "{counts:?}");
    assert!(c(&counts, "backend_http_4xx") >= 15, "{counts:?}");
}

#[test]
fn connection_reset_mid_response() {
    let counts = scripted_case(
        "reset (close w/o answer) x4",
        vec![Behaviour::CloseConnection; 4],
        100,
        &[],
    );
    assert!(c(&counts, "retries") >= 4, "{counts:?}");
}

#[test]
fn garbage_200_body_counts_as_sent_once() {
    let counts = scripted_case("200 non-JSON x3", vec![Behaviour::Garbage; 3], 200, &[]);
    // A 200 means the service took the batch: no retry, no duplicate.
    assert_eq!(c(&counts, "retries"), 0, "{counts:?}");
}

#[test]
fn slow_responses_past_upload_timeout() {
    // The timeout leaves room for the unscripted calls on a loaded machine: only the scripted
    // ones may time out, or the duplicate check below would blame the daemon.
    let case = "slow 4s > --upload-timeout 2s x3";
    let fake = FakeXray::start();
    fake.set_script(vec![Behaviour::delay(millis(4000), Behaviour::Ok); 3]);
    let mut d = spawn_against(&fake, &["--upload-timeout", "2s"]);
    let addr = d.udp_addr();
    let want = docs(0..100, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    // Every document reaches the service at least once.
    poll_until(
        DELIVERY,
        || format!("{case}: {}", fake.summary()),
        || {
            let got: HashSet<String> = fake.delivered_documents().into_iter().collect();
            want.iter().all(|w| got.contains(w)).then_some(())
        },
    );
    // Let the delayed answers finish before stopping: every call made so far is answered.
    let calls = fake.request_count();
    assert!(
        fake.wait_for_answered(calls, DELIVERY),
        "{case}: {calls} calls not all answered: {}",
        fake.summary()
    );
    let counts = stop(&mut d);
    assert_eq!(c(&counts, "sent"), 100, "{counts:?}");
    assert!(c(&counts, "backend_timeout") >= 3, "{counts:?}");
    assert!(c(&counts, "retries") >= 3, "{counts:?}");
    // The daemon gave up on the slow calls; the fake may still have taken them (its late 200 went
    // into a closed connection). Duplicates are allowed only for documents of such calls.
    let reqs = fake.requests();
    let timed_out: HashSet<&str> = reqs
        .iter()
        .filter(|r| matches!(r.behaviour, Some(Behaviour::Delay(..))))
        .flat_map(|r| r.documents.iter().map(String::as_str))
        .collect();
    let mut n: HashMap<String, usize> = HashMap::new();
    for d in fake.delivered_documents() {
        *n.entry(d).or_default() += 1;
    }
    for (doc, k) in &n {
        assert!(
            *k == 1 || timed_out.contains(doc.as_str()),
            "{case}: {:?} delivered {k} times without a timeout",
            segment_index(doc)
        );
    }
    let dup = n.values().filter(|k| **k > 1).count();
    println!("{case}: {dup} documents delivered twice (late 200 after the client timed out)");
    print_row(case, &counts, fake.delivered_count());
}

#[test]
fn partial_unprocessed() {
    let case = "200 with UnprocessedTraceSegments 5+3";
    let fake = FakeXray::start();
    fake.set_script(vec![Behaviour::Unprocessed(5), Behaviour::Unprocessed(3)]);
    let mut d = spawn_against(&fake, &[]);
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    let want = docs(0..100, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    wait_delivered(&fake, 92, case);
    // The daemon has read both answers: 92 counted as sent, the 8 returned as unprocessed.
    support::wait_for_sample(tcp, "xrayd_segments_sent_total", secs(15), case, |n| {
        n == 92
    });
    support::wait_for_sample(
        tcp,
        "xrayd_segments_unprocessed_total",
        secs(15),
        case,
        |n| n == 8,
    );
    let counts = stop(&mut d);
    let unprocessed_ids: HashSet<String> = fake
        .requests()
        .iter()
        .flat_map(|r| r.unprocessed_ids.clone())
        .collect();
    assert_eq!(unprocessed_ids.len(), 8);
    assert_eq!(c(&counts, "unprocessed"), 8, "{counts:?}");
    assert_eq!(c(&counts, "sent"), 92, "{counts:?}");
    let expect: Vec<String> = want
        .iter()
        .filter(|d| !unprocessed_ids.contains(&document_id(d)))
        .cloned()
        .collect();
    assert_exactly_once(&fake, &expect, case);
    print_row(case, &counts, fake.delivered_count());
}

#[test]
fn unknown_host_is_counted_and_dropped_at_shutdown() {
    let case = "unknown host (no-such-host.invalid)";
    let t0 = Instant::now();
    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&("no-such-host.invalid", 1));
    assert!(resolved.is_err(), ".invalid resolved: {resolved:?}");
    assert!(
        t0.elapsed() < secs(5),
        "the resolver is slow ({:?}); this case would mostly measure it",
        t0.elapsed()
    );
    let mut d = spawn_for(
        "http://no-such-host.invalid:1",
        &["--shutdown-timeout", "2s"],
    );
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    let want = docs(0..60, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    // All 60 taken, and a call failed on the name.
    support::wait_for_sample(tcp, "xrayd_segments_received_total", secs(15), case, |n| {
        n == 60
    });
    support::wait_for_sample(
        tcp,
        r#"xrayd_upload_errors_total{class="unknown_host"}"#,
        secs(30),
        case,
        |n| n >= 1,
    );
    let counts = stop(&mut d);
    assert_eq!(c(&counts, "received"), 60, "{counts:?}");
    assert_eq!(c(&counts, "sent"), 0, "{counts:?}");
    assert_eq!(c(&counts, "dropped_at_shutdown"), 60, "{counts:?}");
    assert!(c(&counts, "backend_unknown_host") >= 1, "{counts:?}");
    assert!(
        d.log().contains("dropped") || d.log().contains("Dropped"),
        "no drop warning"
    );
    print_row(case, &counts, 0);
}

#[test]
fn connection_refused_then_endpoint_appears() {
    let case = "connection refused, then up";
    let fake = FakeXray::start();
    let port = Forwarder::closed_port();
    let mut d = spawn_for(&format!("http://127.0.0.1:{port}"), &[]);
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    let want = docs(0..80, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    // Calls are being refused.
    support::wait_for_sample(
        tcp,
        r#"xrayd_upload_errors_total{class="connection_refused"}"#,
        secs(30),
        case,
        |n| n >= 1,
    );
    assert_eq!(fake.request_count(), 0);
    let _fwd = Forwarder::start(port, fake.addr());
    wait_delivered(&fake, want.len(), case);
    let counts = stop(&mut d);
    assert_exactly_once(&fake, &want, case);
    assert_eq!(c(&counts, "sent"), 80, "{counts:?}");
    assert!(c(&counts, "backend_connection_refused") >= 1, "{counts:?}");
    print_row(case, &counts, fake.delivered_count());
}

#[test]
fn outage_then_recovery() {
    let outage: u64 = std::env::var("XRAYD_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let case = format!("outage {outage}s (refused+reset), then recovery");
    let fake = FakeXray::start();
    let port = Forwarder::closed_port();
    let mut fwd = Forwarder::start(port, fake.addr());
    let mut d = spawn_for(&format!("http://127.0.0.1:{port}"), &[]);
    let addr = d.udp_addr();
    // Before: 50 documents delivered normally.
    let before = docs(0..50, 300);
    send_segments_paced(addr, &before, Pace::GENTLE);
    wait_delivered(&fake, 50, &case);
    // The fake holds the documents once it has answered; the daemon must also have read that
    // answer before the connections are cut, or it would rightly send the batch again.
    poll_until(
        secs(10),
        || format!("first 50 not counted:\n{}", d.log()),
        || (d.sent_batch_sizes().iter().sum::<usize>() >= 50).then_some(()),
    );
    // Outage: the endpoint goes away (open connections reset, new ones refused) while 20
    // documents a second keep arriving.
    fwd.shutdown();
    let started = Instant::now();
    let mut during = Vec::new();
    let mut i = 1000u64;
    while started.elapsed() < secs(outage) {
        let batch = docs(i..i + 10, 300);
        send_segments_paced(addr, &batch, Pace::GENTLE);
        during.extend(batch);
        i += 10;
        // Pacing, not a wait: the outage lasts a set time with traffic at a set rate.
        std::thread::sleep(millis(500));
    }
    let delivered_during = fake.delivered_count();
    let _fwd = Forwarder::start(port, fake.addr());
    let recovered_at = Instant::now();
    let mut want = before.clone();
    want.extend(during.iter().cloned());
    wait_delivered(&fake, want.len(), &case);
    let catch_up = recovered_at.elapsed();
    let counts = stop(&mut d);
    assert_eq!(delivered_during, 50, "nothing can arrive during the outage");
    assert_exactly_once(&fake, &want, &case);
    assert_eq!(c(&counts, "sent"), want.len() as u64, "{counts:?}");
    assert_eq!(c(&counts, "spillover"), 0, "{counts:?}");
    assert!(c(&counts, "retries") >= 1, "{counts:?}");
    println!(
        "{case}: {} documents sent during the outage, all delivered {:.1}s after recovery",
        during.len(),
        catch_up.as_secs_f64()
    );
    print_row(&case, &counts, fake.delivered_count());
}

#[test]
fn one_unreadable_document_does_not_take_its_batch_with_it() {
    let case = "400 for one document of 50";
    let fake = FakeXray::start();
    fake.set_poison("POISON");
    let mut d = spawn_against(&fake, &[]);
    let mut all = docs(0..50, 300);
    all[25] = all[25].replace("xrayd-test-service", "xrayd-POISON-service");
    let bad: serde_json::Value = serde_json::from_str(&all[25]).expect("JSON");
    let healthy: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 25)
        .map(|(_, d)| d.clone())
        .collect();
    send_segments_paced(d.udp_addr(), &all, Pace::GENTLE);
    wait_delivered(&fake, 49, case);
    let line = format!(
        "Dropping segment: trace id {}, segment id {}",
        bad["trace_id"].as_str().unwrap(),
        bad["id"].as_str().unwrap()
    );
    d.wait_for_line(&line, secs(10))
        .unwrap_or_else(|| panic!("no line {line:?}:\n{}", d.log()));
    let counts = stop(&mut d);
    assert_exactly_once(&fake, &healthy, case);
    assert_eq!(c(&counts, "sent"), 49, "{counts:?}");
    assert_eq!(c(&counts, "rejected_by_xray"), 1, "{counts:?}");
    assert_eq!(d.count_lines("Dropping segment:"), 1, "{}", d.log());
    print_row(case, &counts, fake.delivered_count());
}

#[test]
fn clock_skew_is_corrected_from_the_date_header() {
    let case = "X-Ray's clock 20 min ahead (403 Signature expired)";
    let fake = FakeXray::start_with(FakeConfig {
        clock_ahead: secs(20 * 60),
        ..FakeConfig::default()
    });
    let mut d = spawn_against(&fake, &[]);
    let want = docs(0..100, 300);
    send_segments_paced(d.udp_addr(), &want, Pace::GENTLE);
    wait_delivered(&fake, want.len(), case);
    let counts = stop(&mut d);
    assert_exactly_once(&fake, &want, case);
    assert_eq!(c(&counts, "sent"), 100, "{counts:?}");
    let refused = fake
        .requests()
        .iter()
        .filter(|r| r.status == Some(403))
        .count();
    assert!(refused >= 1, "the fake never refused: {}", fake.summary());
    let line = d
        .wait_for_line("seconds ahead of ours", secs(1))
        .unwrap_or_else(|| panic!("no clock line:\n{}", d.log()));
    assert!(
        line.contains("1200 seconds") || line.contains("1199 seconds"),
        "{line}"
    );
    assert_eq!(d.count_lines("seconds ahead of ours"), 1, "{}", d.log());
    print_row(case, &counts, fake.delivered_count());
}

/// A `size`-byte document whose padding is all `"` and `\`: escaping doubles it on the wire.
fn escape_heavy_segment(i: u64, size: usize) -> String {
    let plain = make_segment(i, size);
    let start = plain.find(r#""pad":""#).expect("pad") + r#""pad":""#.len();
    let end = start + plain[start..].find('"').expect("pad end");
    let mut pad = r#"\"\\"#.repeat((end - start) / 4);
    pad.push_str(&"x".repeat((end - start) % 4));
    let doc = format!("{}{pad}{}", &plain[..start], &plain[end..]);
    debug_assert_eq!(doc.len(), size);
    doc
}

/// `VmHWM` (peak), `VmRSS` (current) and `RssFile` (mapped files: the binary's code) of a
/// process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("VmHWM:"), field("VmRSS:"), field("RssFile:"))
}

/// 60 KB segments (escape-heavy or plain) through an outage (503s, then recovery) or a slow X-Ray
/// (2 s per call) with a budget of `budget_mib`: the daemon's peak RSS and its RSS once all is
/// delivered stay within the budget plus 16 MiB.
fn memory_case(budget_mib: u64, escaped: bool, slow: bool) {
    const SIZE: usize = 60_000;
    let case = format!(
        "-m {budget_mib}, 60 KB {} segments, {}",
        if escaped { "escape-heavy" } else { "plain" },
        if slow {
            "X-Ray answering after 2 s"
        } else {
            "503 outage then recovery"
        }
    );
    let fake = FakeXray::start();
    fake.set_default(if slow {
        Behaviour::delay(secs(2), Behaviour::Ok)
    } else {
        Behaviour::service_unavailable()
    });
    let budget = budget_mib.to_string();
    let mut d = spawn_against(&fake, &["-m", &budget]);
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    // A quarter more than the budget holds, at least two full batches.
    let n = (budget_mib * 1024 * 1024 * 5 / 4 / SIZE as u64).max(100);
    let want: Vec<String> = (0..n)
        .map(|i| {
            if escaped {
                escape_heavy_segment(i, SIZE)
            } else {
                make_segment(i, SIZE)
            }
        })
        .collect();
    // Slow enough for a debug build to take every datagram.
    let pace = Pace {
        burst: 2,
        pause: millis(5),
    };
    send_segments_paced(addr, &want, pace);
    if !slow {
        assert!(fake.wait_for_requests(1, DELIVERY), "{}", fake.summary());
        fake.set_default(Behaviour::Ok);
    }
    poll_until(
        secs(180),
        || format!("{case}: still buffered; fake: {}", fake.summary()),
        || (support::sample(tcp, "xrayd_buffered_segments") == Some(0)).then_some(()),
    );
    let (peak, after, code) = rss_kib(d.pid());
    let counts = stop(&mut d);
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "MEMORY | {case} | peak RSS {:.1} MiB | after delivery {:.1} MiB | of which files (code) {:.1} MiB | received={} sent={} spillover={} |",
        mib(peak),
        mib(after),
        mib(code),
        c(&counts, "received"),
        c(&counts, "sent"),
        c(&counts, "spillover")
    );
    // The budget plus 16 MiB, of which the code of a release binary takes about 4 MiB: a debug
    // binary's code (about 10 MiB) is not held against the daemon.
    let limit = (budget_mib + 16) * 1024 + code.saturating_sub(4 * 1024);
    assert!(
        peak <= limit && after <= limit,
        "{case}: peak {peak} KiB, after {after} KiB, limit {limit} KiB (mapped files {code} KiB)"
    );
    assert!(c(&counts, "sent") > 0, "{counts:?}");
}

#[test]
fn memory_m3_escaped_outage() {
    memory_case(3, true, false);
}

#[test]
fn memory_m3_plain_slow() {
    memory_case(3, false, true);
}

#[test]
fn memory_m3_escaped_slow() {
    memory_case(3, true, true);
}

#[test]
fn memory_m16_escaped_outage() {
    memory_case(16, true, false);
}

#[test]
fn memory_m16_plain_outage() {
    memory_case(16, false, false);
}

#[test]
fn memory_m16_escaped_slow() {
    memory_case(16, true, true);
}

#[test]
fn memory_m64_plain_slow() {
    memory_case(64, false, true);
}

#[test]
fn memory_m64_escaped_slow() {
    memory_case(64, true, true);
}

#[test]
fn memory_m64_escaped_outage() {
    memory_case(64, true, false);
}

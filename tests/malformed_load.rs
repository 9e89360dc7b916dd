//! Malformed input at line rate, interleaved with valid traffic from another socket, against the
//! real xrayd (`-m 8`, default log level) and FakeXray:
//! - every valid segment is delivered exactly once;
//! - the rejections per reason equal what was sent per reason (all malformed kinds here have a
//!   deterministic reason; 0-byte datagrams are not counted at all);
//! - the resident set stays within the 8 MB budget plus a stated overhead above the idle RSS;
//! - the log at the default level quotes no datagram bytes and holds only a few rate-limited
//!   summary lines.

use xrayd_kit as support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use support::daemon::Daemon;
use support::udp::{HEADER, Pace, datagram, send_segments_paced, sender_for};
use support::{FakeXray, assert_conserved, make_segment, millis, poll_until, secs, segment_index};

/// A string the malformed datagrams carry; it must never show up in the log.
const MARKER: &str = "ECHOED-BYTES-MARKER";
/// RSS allowed above the idle process, on top of the `-m 8` budget: allocator slack and
/// fragmentation, the upload bodies being encoded (a batch of 50 × 64 KB is ~3.3 MB, times
/// in-flight uploads), and thread stacks touched under load.
const OVERHEAD_KB: u64 = 24 * 1024;
const BUDGET_KB: u64 = 8 * 1024;

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// xorshift64*: deterministic random bytes.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[derive(Default, Debug)]
struct Sent {
    no_newline: u64,
    bad_header: u64,
    bad_json: u64,
    empty: u64,
}

/// One round of malformed datagrams; returns how many of each reason it sent.
fn malformed_round(rng: &mut Rng, round: u64) -> (Vec<Vec<u8>>, Sent) {
    let mut out = Vec::new();
    let mut s = Sent::default();
    // Random bytes without a newline: no header/segment split.
    for _ in 0..4 {
        let n = 1 + (rng.next() % 1400) as usize;
        let mut b = rng.bytes(n);
        for x in b.iter_mut() {
            if *x == b'\n' {
                *x = b'x';
            }
        }
        b.extend_from_slice(MARKER.as_bytes());
        out.push(b);
        s.no_newline += 1;
    }
    // A random first line (not JSON: starts with 'x'), then a body.
    {
        let mut b = rng.bytes(200);
        for x in b.iter_mut() {
            if *x == b'\n' {
                *x = b'y';
            }
        }
        b[0] = b'x';
        b.extend_from_slice(format!("{MARKER}\n{{}}").as_bytes());
        out.push(b);
        s.bad_header += 1;
    }
    // Huge headers: 2 KB and (every 10th round) ~60 KB first lines (valid JSON, but no SDK
    // sends that).
    let pads: &[usize] = if round.is_multiple_of(10) {
        &[2_000, 60_000]
    } else {
        &[2_000]
    };
    for &pad in pads {
        let h = format!(
            "{{\"format\":\"json\",\"version\":1,\"pad\":\"{MARKER}{}\"}}\n{{\"a\":1}}",
            "A".repeat(pad)
        );
        out.push(h.into_bytes());
        s.bad_header += 1;
    }
    // Truncated JSON behind a good header.
    {
        let doc = make_segment(900_000 + round, 300).replace("xrayd-test-service", MARKER);
        let cut = 10 + (rng.next() as usize) % (doc.len() - 20);
        let mut b = HEADER.as_bytes().to_vec();
        b.extend_from_slice(&doc.as_bytes()[..cut]);
        out.push(b);
        s.bad_json += 1;
    }
    // A ~64 KB body that is not JSON (every 10th round).
    if round % 10 == 5 {
        let body = format!("[{MARKER}{}", "[".repeat(64_000));
        out.push(datagram(&body));
        s.bad_json += 1;
    }
    // 0-byte datagrams.
    for _ in 0..3 {
        out.push(Vec::new());
        s.empty += 1;
    }
    (out, s)
}

#[test]
fn malformed_flood_with_valid_traffic() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake_with_level(&fake, None, &["-m", "8"], &[]);
    let addr = d.udp_addr();
    let pid = d.pid();
    // Idle: started up in full (ingest running, credentials found), nothing received yet.
    let tcp = d.tcp_addr();
    poll_until(
        secs(20),
        || {
            format!(
                "not ready: xrayd_ready is {:?}",
                support::sample(tcp, "xrayd_ready")
            )
        },
        || (support::sample(tcp, "xrayd_ready") == Some(1)).then_some(()),
    );
    let idle_kb = vm_rss_kb(pid).expect("VmRSS");

    // RSS sampler.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(idle_kb));
    let samples = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak, samples) = (done.clone(), peak.clone(), samples.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(kb) = vm_rss_kb(pid) {
                    peak.fetch_max(kb, Ordering::SeqCst);
                }
                samples.fetch_add(1, Ordering::SeqCst);
                // The sampling period, not a wait.
                std::thread::sleep(millis(20));
            }
        })
    };

    // Malformed sender: its own socket, as fast as the pacing below allows, until told to stop.
    let stop_bad = Arc::new(AtomicBool::new(false));
    let bad = {
        let stop_bad = stop_bad.clone();
        std::thread::spawn(move || {
            let sock = sender_for(addr);
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut total = Sent::default();
            let mut round = 0u64;
            let t0 = Instant::now();
            while !stop_bad.load(Ordering::SeqCst) && t0.elapsed() < secs(60) {
                let (dgrams, s) = malformed_round(&mut rng, round);
                for g in &dgrams {
                    sock.send_to(g, addr).expect("send malformed");
                }
                total.no_newline += s.no_newline;
                total.bad_header += s.bad_header;
                total.bad_json += s.bad_json;
                total.empty += s.empty;
                round += 1;
                // Pacing, not a wait. ~10 datagrams (~8 KB, every 10th round ~70 KB more) per round; the pause keeps
                // the kernel's receive buffer from overflowing on a slow debug build (a kernel
                // drop would show as received < sent below).
                std::thread::sleep(millis(2));
            }
            (total, round)
        })
    };

    // Valid traffic over ~9 s: 3000 small documents plus 20 documents of ~60 KB, in chunks of 50.
    let mut want: Vec<String> = (0..3000).map(|i| make_segment(i, 300)).collect();
    want.extend((3000..3020).map(|i| make_segment(i, 60_000)));
    let started = Instant::now();
    send_segments_paced(
        addr,
        &want,
        Pace {
            burst: 50,
            pause: millis(150),
        },
    );
    // Keep the flood going a little longer than the valid traffic: until all of it is delivered.
    let delivered = fake.wait_for_documents(want.len(), secs(90));
    stop_bad.store(true, Ordering::SeqCst);
    let (sent_bad, rounds) = bad.join().expect("malformed sender");
    let flood_secs = started.elapsed().as_secs_f64();

    assert!(
        delivered,
        "valid documents: {} of {} delivered; {}",
        fake.delivered_count(),
        want.len(),
        fake.summary()
    );
    // The peak includes the process as it is once everything is delivered: a sample taken
    // wholly after this point.
    let seen = samples.load(Ordering::SeqCst);
    poll_until(
        secs(10),
        || "the RSS sampler has stopped".to_string(),
        || (samples.load(Ordering::SeqCst) >= seen + 2).then_some(()),
    );
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let peak_kb = peak.load(Ordering::SeqCst);

    d.sigterm();
    let status = d.wait_exit(secs(40));
    assert!(status.success(), "{status:?}");
    let counts = d.final_counts();
    let k = |n: &str| counts[n];

    // Every valid document exactly once, nothing else.
    let got = fake.delivered_documents();
    let mut n: HashMap<&str, usize> = HashMap::new();
    for g in &got {
        *n.entry(g.as_str()).or_default() += 1;
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|w| !n.contains_key(w.as_str()))
        .map(|w| segment_index(w))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && got.len() == want.len(),
        "delivered {} of {}; missing {missing:?}",
        got.len(),
        want.len()
    );

    let malformed = sent_bad.no_newline + sent_bad.bad_header + sent_bad.bad_json;
    println!(
        "malformed_load: {rounds} rounds in {flood_secs:.1}s: {malformed} malformed ({:.0}/s) + {} empty + {} valid datagrams; rejected no_newline={} bad_header={} bad_json={} too_large={}; RSS idle {idle_kb} KB, peak {peak_kb} KB (+{} KB; allowed +{} KB)",
        malformed as f64 / flood_secs,
        sent_bad.empty,
        want.len(),
        k("rejected_no_newline"),
        k("rejected_bad_header"),
        k("rejected_bad_json"),
        k("rejected_too_large"),
        peak_kb.saturating_sub(idle_kb),
        BUDGET_KB + OVERHEAD_KB
    );
    assert_eq!(
        k("received"),
        malformed + want.len() as u64,
        "received = malformed + valid (0-byte datagrams are not counted; a difference means kernel drops): {counts:?}"
    );
    assert_eq!(k("rejected_no_newline"), sent_bad.no_newline, "{counts:?}");
    assert_eq!(k("rejected_bad_header"), sent_bad.bad_header, "{counts:?}");
    assert_eq!(k("rejected_bad_json"), sent_bad.bad_json, "{counts:?}");
    assert_eq!(k("rejected_too_large"), 0, "{counts:?}");
    assert_eq!(k("sent"), want.len() as u64, "{counts:?}");
    assert_eq!(k("spillover"), 0, "{counts:?}");
    assert_conserved(&counts);

    assert!(
        peak_kb <= idle_kb + BUDGET_KB + OVERHEAD_KB,
        "RSS peak {peak_kb} KB > idle {idle_kb} KB + budget {BUDGET_KB} KB + overhead {OVERHEAD_KB} KB"
    );

    // Quiet log: no datagram bytes, rate-limited summaries (one per 10 s at most).
    let log = d.log();
    assert!(!log.contains(MARKER), "datagram bytes echoed in the log");
    let summaries = d.count_lines("Rejected a datagram");
    let allowed = (flood_secs / 10.0).ceil() as usize + 2;
    assert!(
        (1..=allowed).contains(&summaries),
        "{summaries} rejection summaries in {flood_secs:.1}s (allowed 1..={allowed})"
    );
    // Besides the start-up lines, the per-batch "Successfully sent batch" info lines (as the AWS
    // daemon logs them) and the summaries, only a handful of lines.
    let lines = d
        .lines()
        .iter()
        .filter(|l| !l.contains("Successfully sent batch"))
        .count();
    assert!(
        lines <= 20 + allowed,
        "{lines} log lines at the default level:\n{log}"
    );
}

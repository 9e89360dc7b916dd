//! Engine tests: real UDP sockets, the real xrayd process, and FakeXray as the
//! X-Ray service. Every wait has a generous safety timeout; nothing here
//! measures performance.

use xrayd_kit as support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::daemon::{Daemon, scratch_dir};
use support::udp::{HEADER, Pace, send_segments_paced};
use support::{
    Behaviour, FakeXray, SigCheck, make_segment, millis, poll_until, secs, segment_index, send_raw,
    send_segments,
};

/// Safety limit for deliveries (debug builds on a loaded 2-core machine).
const DELIVERY: Duration = Duration::from_secs(90);
/// Safety limit for exiting after SIGTERM.
const EXIT: Duration = Duration::from_secs(30);

const COUNTER_KEYS: [&str; 12] = [
    "received",
    "rejected",
    "rejected_no_newline",
    "rejected_bad_header",
    "rejected_bad_json",
    "rejected_too_large",
    "spillover",
    "sent",
    "unprocessed",
    "rejected_by_xray",
    "dropped_at_shutdown",
    "retries",
];

fn docs(range: std::ops::Range<u64>, size: usize) -> Vec<String> {
    range.map(|i| make_segment(i, size)).collect()
}

/// Same multiset of documents, with a readable message instead of a 10 MB diff.
fn assert_same_documents(got: &[String], want: &[String], what: &str) {
    fn count(v: &[String]) -> HashMap<&str, usize> {
        let mut m: HashMap<&str, usize> = HashMap::new();
        for d in v {
            *m.entry(d.as_str()).or_default() += 1;
        }
        m
    }
    let (g, w) = (count(got), count(want));
    let dups: Vec<_> = g
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(d, n)| (segment_index(d), *n))
        .take(10)
        .collect();
    let missing: Vec<_> = w
        .keys()
        .filter(|d| !g.contains_key(*d))
        .map(|d| segment_index(d))
        .take(10)
        .collect();
    let extra: Vec<_> = g
        .keys()
        .filter(|d| !w.contains_key(*d))
        .map(|d| (segment_index(d), d.chars().take(120).collect::<String>()))
        .take(5)
        .collect();
    assert!(
        dups.is_empty() && missing.is_empty() && extra.is_empty() && got.len() == want.len(),
        "{what}: got {} documents, want {}; duplicated (index, times) {dups:?}; missing indexes {missing:?}; unexpected {extra:?}",
        got.len(),
        want.len()
    );
}

fn counter(counts: &HashMap<String, u64>, key: &str) -> u64 {
    *counts
        .get(key)
        .unwrap_or_else(|| panic!("no counter {key:?} in final counts {counts:?}"))
}

/// The contract's conservation law, plus the per-reason rejections adding up.
fn assert_counts_add_up(counts: &HashMap<String, u64>) {
    for k in COUNTER_KEYS {
        counter(counts, k);
    }
    let c = |k| counter(counts, k);
    assert_eq!(
        c("received"),
        c("rejected")
            + c("sent")
            + c("unprocessed")
            + c("rejected_by_xray")
            + c("spillover")
            + c("dropped_at_shutdown"),
        "received = rejected + sent + unprocessed + rejected_by_xray + spillover + dropped_at_shutdown: {counts:?}"
    );
    assert_eq!(
        c("rejected"),
        c("rejected_no_newline")
            + c("rejected_bad_header")
            + c("rejected_bad_json")
            + c("rejected_too_large"),
        "rejected = sum of the reasons: {counts:?}"
    );
}

/// SIGTERM, expect exit 0, return the final counts.
fn stop(d: &mut Daemon) -> HashMap<String, u64> {
    d.sigterm();
    let status = d.wait_exit(EXIT);
    assert!(status.success(), "xrayd exited with {status:?}");
    assert!(
        d.wait_for_line("Got shutdown signal: terminated", secs(1))
            .is_some(),
        "no shutdown-signal line"
    );
    let counts = d.final_counts();
    assert_counts_add_up(&counts);
    counts
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `X-Amzn-Xray-Timestamp`: Unix seconds with exactly 9 decimals, near now.
fn assert_xray_timestamp(ts: Option<&str>) {
    let ts = ts.expect("X-Amzn-Xray-Timestamp header missing");
    let (whole, frac) = ts.split_once('.').unwrap_or_else(|| panic!("{ts:?}"));
    assert!(
        whole.bytes().all(|b| b.is_ascii_digit()) && !whole.is_empty(),
        "{ts:?}"
    );
    assert!(
        frac.len() == 9 && frac.bytes().all(|b| b.is_ascii_digit()),
        "{ts:?} must have 9 decimals"
    );
    let v: f64 = ts.parse().unwrap();
    assert!((v - now_secs()).abs() < 600.0, "{ts:?} is not now");
}

// -------------------------------------------------------------------------- tests

#[test]
fn delivers_thousands_of_segments_byte_exact_in_signed_batches_of_at_most_50() {
    let fake = FakeXray::start();
    let token = "IQoJb3JpZ2luX2VjEXAMPLE/session+token==";
    let mut d = Daemon::for_fake(&fake, &[], &[("AWS_SESSION_TOKEN", token)]);
    let addr = d.udp_addr();
    let n = 3000u64;
    let sent: Vec<String> = (0..n)
        .map(|i| make_segment(i, 600 + (i as usize * 37) % 3000))
        .collect();
    // Flow control: at most 500 documents (~1.3 MB) outstanding, so the kernel
    // never drops a datagram however slow a debug build is.
    support::send_with_flow_control(addr, &sent, &fake, 500, DELIVERY);
    let delivered = fake.wait_for_documents(n as usize, DELIVERY);
    let counts = stop(&mut d);
    assert!(
        delivered,
        "only {} of {n} delivered; final counts {counts:?}\n{}",
        fake.delivered_count(),
        fake.summary()
    );

    assert_same_documents(&fake.delivered_documents(), &sent, "delivered");
    let reqs = fake.requests();
    assert_eq!(fake.bad_signatures(), 0, "{}", fake.summary());
    for r in &reqs {
        assert_eq!(r.signature, SigCheck::Ok, "request #{}", r.seq);
        assert!(
            !r.documents.is_empty() && r.documents.len() <= 50,
            "request #{} has {} documents",
            r.seq,
            r.documents.len()
        );
        assert_eq!(
            r.security_token.as_deref(),
            Some(token),
            "request #{}",
            r.seq
        );
        assert_xray_timestamp(r.xray_timestamp.as_deref());
        assert_eq!(r.status, Some(200));
    }
    assert!(reqs.len() >= (n as usize).div_ceil(50));

    assert_eq!(counter(&counts, "received"), n, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), n, "{counts:?}");
    for k in [
        "rejected",
        "spillover",
        "unprocessed",
        "rejected_by_xray",
        "dropped_at_shutdown",
        "retries",
    ] {
        assert_eq!(counter(&counts, k), 0, "{k}: {counts:?}");
    }
    // One success line per batch, adding up to everything.
    let sizes = d.sent_batch_sizes();
    assert_eq!(sizes.len(), reqs.len(), "one success line per request");
    assert_eq!(sizes.iter().sum::<usize>(), n as usize);
    assert!(sizes.iter().all(|s| *s <= 50));
}

#[test]
fn upload_requests_carry_the_xray_headers() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake(&fake, &[], &[]);
    let sent = docs(0..2, 800);
    send_segments(d.udp_addr(), &sent);
    assert!(fake.wait_for_documents(2, DELIVERY), "{}", fake.summary());
    let r = &fake.requests()[0];
    assert_eq!(r.signature, SigCheck::Ok);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/TraceSegments");
    assert_eq!(r.security_token, None, "no session token was configured");
    assert_xray_timestamp(r.xray_timestamp.as_deref());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let ua = r.user_agent.as_deref().expect("User-Agent");
    assert!(
        ua.contains("exec-env/UNKNOWN") && ua.contains("OS/linux"),
        "user agent {ua:?} lacks the daemon suffix (exec-env/<env or UNKNOWN> OS/<os>-<arch>)"
    );
    // The X-Amzn-Xray-Timestamp header is signed (it is set before signing).
    let auth = r.header("authorization").unwrap();
    assert!(auth.contains("x-amzn-xray-timestamp"), "{auth}");
    stop(&mut d);
}

#[test]
fn idle_batch_is_flushed_after_one_second_not_before() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake(&fake, &[], &[]);
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    let sent = docs(0..3, 1000);
    let t0 = Instant::now();
    send_segments(addr, &sent);
    // All three are in the daemon now, and none may have gone out yet: the batch waits for more.
    support::wait_for_sample(
        tcp,
        "xrayd_segments_received_total",
        secs(10),
        "3 segments received",
        |n| n == 3,
    );
    assert_eq!(
        fake.request_count(),
        0,
        "a partial batch went out before the 1 s idle flush"
    );
    assert!(fake.wait_for_documents(3, secs(10)), "{}", fake.summary());
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1, "the 3 segments must go as one batch");
    assert_eq!(reqs[0].documents, sent, "one batch, in arrival order");
    let waited = reqs[0].received_at - t0;
    assert!(
        waited >= millis(900),
        "flushed after {waited:?}, before the 1 s interval"
    );
    stop(&mut d);
}

#[test]
fn throttling_5xx_and_broken_connections_are_retried_until_everything_arrives_once() {
    let fake = FakeXray::start();
    fake.set_script(vec![
        Behaviour::throttled(),
        Behaviour::server_error(),
        Behaviour::CloseConnection,
        Behaviour::service_unavailable(),
        Behaviour::throttled(),
        Behaviour::Status(502, r#"{"message":"bad gateway"}"#.into()),
        Behaviour::CloseConnection,
    ]);
    let mut d = Daemon::for_fake(
        &fake,
        &[
            "--concurrency",
            "2",
            "--retry-base-delay",
            "50ms",
            "--retry-max-delay",
            "1s",
        ],
        &[],
    );
    let sent = docs(0..300, 700);
    send_segments(d.udp_addr(), &sent);
    assert!(fake.wait_for_documents(300, DELIVERY), "{}", fake.summary());
    assert_eq!(fake.script_remaining(), 0);
    let counts = stop(&mut d);
    assert_same_documents(&fake.delivered_documents(), &sent, "delivered");
    assert_eq!(counter(&counts, "sent"), 300, "{counts:?}");
    assert_eq!(counter(&counts, "rejected_by_xray"), 0, "{counts:?}");
    assert_eq!(counter(&counts, "dropped_at_shutdown"), 0, "{counts:?}");
    assert_eq!(counter(&counts, "spillover"), 0, "{counts:?}");
    assert!(
        counter(&counts, "retries") >= 7,
        "7 failed attempts, each retried: {counts:?}"
    );
    // Every failed request's documents came back in later successful requests.
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| r.signature.is_ok()));
    let failed: Vec<_> = reqs.iter().filter(|r| !r.succeeded()).collect();
    assert_eq!(failed.len(), 7, "{}", fake.summary());
}

#[test]
fn client_errors_are_not_retried_and_counted_as_rejected_by_xray() {
    let fake = FakeXray::start();
    // A refusal that splitting the batch cannot cure (a 400 for a malformed batch is split to
    // find the document at fault: see tests/faults.rs).
    fake.set_script(vec![Behaviour::Status(
        403,
        r#"{"__type":"AccessDeniedException","message":"not allowed (fake)"}"#.into(),
    )]);
    let mut d = Daemon::for_fake(
        &fake,
        &["--retry-base-delay", "50ms", "--retry-max-delay", "200ms"],
        &[],
    );
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    let first = docs(0..10, 600);
    send_segments(addr, &first);
    assert!(fake.wait_for_answered(1, secs(15)), "{}", fake.summary());
    // Once the daemon has counted the batch as refused, it is done with it: a retry would have
    // come instead.
    support::wait_for_sample(
        tcp,
        "xrayd_segments_refused_total",
        secs(15),
        "the 10 segments counted as refused",
        |n| n == 10,
    );
    assert_eq!(
        fake.request_count(),
        1,
        "a 400 was retried\n{}",
        fake.summary()
    );
    let second = docs(10..15, 600);
    send_segments(addr, &second);
    assert!(fake.wait_for_documents(5, DELIVERY), "{}", fake.summary());
    let counts = stop(&mut d);
    assert_eq!(fake.delivered_documents(), second);
    assert_eq!(counter(&counts, "rejected_by_xray"), 10, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), 5, "{counts:?}");
    assert_eq!(counter(&counts, "retries"), 0, "{counts:?}");
    assert_eq!(counter(&counts, "received"), 15, "{counts:?}");
}

#[test]
fn unprocessed_segments_are_logged_with_their_ids_and_counted() {
    let fake = FakeXray::start();
    fake.set_script(vec![Behaviour::Unprocessed(2)]);
    let mut d = Daemon::for_fake(&fake, &[], &[]);
    let sent = docs(0..5, 700);
    send_segments(d.udp_addr(), &sent);
    let line = d
        .wait_for_line("Unprocessed segments", secs(15))
        .unwrap_or_else(|| panic!("no unprocessed line\n{}", d.log()));
    assert!(
        line.contains("Sent batch of 5 segments but had 2 Unprocessed segments ("),
        "{line}"
    );
    assert!(line.trim_end().ends_with("seconds)"), "{line}");
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let ids = reqs[0].unprocessed_ids.clone();
    assert_eq!(ids.len(), 2);
    // One error line per unprocessed segment, naming its trace id and id.
    for id in &ids {
        let doc = sent
            .iter()
            .find(|s| support::document_id(s) == *id)
            .expect("id of a sent document");
        let v: serde_json::Value = serde_json::from_str(doc).unwrap();
        let trace = v["trace_id"].as_str().unwrap().to_string();
        assert!(
            d.wait_for(secs(5), |lines| lines
                .iter()
                .any(|l| l.contains(id.as_str()) && l.contains(&trace))),
            "no line names segment {id} of trace {trace}\n{}",
            d.log()
        );
    }
    assert!(fake.wait_for_documents(3, secs(10)));
    let counts = stop(&mut d);
    assert_eq!(counter(&counts, "unprocessed"), 2, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), 3, "{counts:?}");
    assert_eq!(
        fake.request_count(),
        1,
        "unprocessed segments are not resent"
    );
    let want: Vec<String> = sent
        .iter()
        .filter(|s| !ids.contains(&support::document_id(s)))
        .cloned()
        .collect();
    assert_eq!(fake.delivered_documents(), want);
}

#[test]
fn over_budget_the_oldest_segments_spill_over_and_the_newest_are_delivered() {
    let fake = FakeXray::start();
    // X-Ray throttles everything while we fill the 3 MB budget twice over.
    fake.set_default(Behaviour::throttled());
    let mut d = Daemon::for_fake(
        &fake,
        &[
            "-m",
            "3",
            "--retry-base-delay",
            "50ms",
            "--retry-max-delay",
            "1s",
        ],
        &[],
    );
    let n = 3000u64;
    let size = 2000;
    let sent = docs(0..n, size);
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    // Chunks of 100 datagrams (~0.4 MB of kernel buffer) 50 ms apart: ample
    // time for the daemon to drain its socket between chunks.
    send_segments_paced(addr, &sent, Pace::CHUNKED);
    // Let the daemon read the socket dry (every datagram received or dropped by the kernel),
    // then let X-Ray accept again.
    poll_until(
        DELIVERY,
        || {
            format!(
                "socket not read dry: {:?} of {n} received, {} dropped by the kernel",
                support::sample(tcp, "xrayd_segments_received_total"),
                support::udp::kernel_drops(addr)
            )
        },
        || {
            let received = support::sample(tcp, "xrayd_segments_received_total")?;
            (received + support::udp::kernel_drops(addr) >= n).then_some(())
        },
    );
    fake.set_default(Behaviour::Ok);
    // Everything that survived the budget is delivered once nothing is held any more.
    support::wait_for_sample(
        tcp,
        "xrayd_buffered_segments",
        DELIVERY,
        "all held segments delivered",
        |held| held == 0,
    );
    let counts = stop(&mut d);

    let delivered = fake.delivered_documents();
    let idx: Vec<u64> = delivered
        .iter()
        .map(|d| segment_index(d).expect("a sent document"))
        .collect();
    let unique: HashSet<u64> = idx.iter().copied().collect();
    assert_eq!(unique.len(), idx.len(), "a segment was delivered twice");
    // The kernel may drop a few datagrams on a loaded machine; what it dropped
    // can explain missing segments below, nothing else can.
    let received = counter(&counts, "received");
    assert!(
        received <= n && received >= n * 9 / 10,
        "received {received} of {n}: {counts:?}"
    );
    let kernel_dropped = (n - received) as usize;
    assert!(counter(&counts, "spillover") > 0, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), idx.len() as u64, "{counts:?}");
    assert_eq!(counter(&counts, "rejected_by_xray"), 0, "{counts:?}");
    // 6 MB through a 3 MB budget: not everything can have survived.
    assert!((idx.len() as u64) < n, "{counts:?}");
    // The newest 1 MB (a third of the budget) must all have survived...
    let newest = n - (1_000_000 / size as u64);
    let missing_newest: Vec<u64> = (newest..n).filter(|i| !unique.contains(i)).collect();
    assert!(
        missing_newest.len() <= kernel_dropped,
        "newest segments were dropped: {} of them, e.g. {:?}; counts {counts:?}",
        missing_newest.len(),
        &missing_newest[..missing_newest.len().min(10)]
    );
    // ...and what was dropped is mostly the old half.
    let old_kept = idx.iter().filter(|i| **i < n / 2).count();
    let new_kept = idx.iter().filter(|i| **i >= n / 2).count();
    assert!(
        new_kept > old_kept,
        "kept {old_kept} old vs {new_kept} new: the oldest must be dropped first"
    );
}

#[test]
fn malformed_datagrams_are_counted_by_reason_and_never_echoed_at_default_level() {
    let fake = FakeXray::start();
    // Default log level: no -l at all.
    let mut d = Daemon::for_fake_with_level(&fake, None, &[], &[]);
    let addr = d.udp_addr();
    const MARK: &str = "S3CRET-CUST0MER-DATA";
    let body = |s: &str| format!("{HEADER}{s}").into_bytes();
    let malformed: Vec<(Vec<u8>, &str)> = vec![
        (format!("{MARK} and no newline").into_bytes(), "no_newline"),
        (HEADER.as_bytes().to_vec(), "no_newline"),
        (
            format!("{{\"format\":\"xml\",\"version\":1}}\n{{\"id\":\"{MARK}\"}}").into_bytes(),
            "bad_header",
        ),
        (
            format!("{{\"format\":\"json\",\"version\":2}}\n{{\"id\":\"{MARK}\"}}").into_bytes(),
            "bad_header",
        ),
        (
            format!("{{\"format\":\"json\",\"version\":\"1\"}}\n{{\"id\":\"{MARK}\"}}")
                .into_bytes(),
            "bad_header",
        ),
        (
            format!("hello {MARK}\n{{\"id\":\"{MARK}\"}}").into_bytes(),
            "bad_header",
        ),
        (body(&format!("{{\"name\":\"{MARK}\",")), "bad_json"),
        (body(&format!("[\"{MARK}\"]")), "bad_json"),
        (
            {
                let mut b = body(&format!("{{\"name\":\"{MARK}"));
                b.extend_from_slice(b"\xff\xfe\"}");
                b
            },
            "bad_json",
        ),
    ];
    let valid = docs(0..3, 700);
    let valid_datagrams: Vec<Vec<u8>> = vec![
        format!("{{\"format\": \"json\", \"version\": 1}}\n{}", valid[0]).into_bytes(),
        format!(
            "{{\"version\":1,\"format\":\"JSON\",\"extra\":\"x\"}}\n{}",
            valid[1]
        )
        .into_bytes(),
        body(&valid[2]),
    ];
    let mut all: Vec<&[u8]> = malformed.iter().map(|(b, _)| b.as_slice()).collect();
    all.push(b""); // empty: ignored, not counted
    all.extend(valid_datagrams.iter().map(|b| b.as_slice()));
    send_raw(addr, &all);

    assert!(fake.wait_for_documents(3, secs(15)), "{}", fake.summary());
    let counts = stop(&mut d);
    let want = |reason: &str| malformed.iter().filter(|(_, r)| *r == reason).count() as u64;
    assert_eq!(counter(&counts, "received"), 12, "{counts:?}");
    assert_eq!(counter(&counts, "rejected"), 9, "{counts:?}");
    assert_eq!(
        counter(&counts, "rejected_no_newline"),
        want("no_newline"),
        "{counts:?}"
    );
    assert_eq!(
        counter(&counts, "rejected_bad_header"),
        want("bad_header"),
        "{counts:?}"
    );
    assert_eq!(
        counter(&counts, "rejected_bad_json"),
        want("bad_json"),
        "{counts:?}"
    );
    assert_eq!(counter(&counts, "rejected_too_large"), 0, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), 3, "{counts:?}");
    let mut delivered = fake.delivered_documents();
    delivered.sort();
    let mut want_docs = valid.clone();
    want_docs.sort();
    assert_eq!(delivered, want_docs);
    let log = d.log();
    assert!(
        !log.contains(MARK) && !log.contains("CUST0MER"),
        "malformed input was echoed at the default log level:\n{log}"
    );
}

#[test]
fn sigterm_drains_the_queue_and_exits_zero() {
    let fake = FakeXray::start();
    fake.set_default(Behaviour::delay(millis(300), Behaviour::Ok));
    let mut d = Daemon::for_fake(
        &fake,
        &["--shutdown-timeout", "5s", "--concurrency", "4"],
        &[],
    );
    let n = 1000u64;
    let sent = docs(0..n, 800);
    send_segments(d.udp_addr(), &sent);
    // Uploads have started and the first one is answered; most segments are still queued or in
    // flight.
    assert!(fake.wait_for_answered(1, secs(15)), "{}", fake.summary());
    let delivered_at_signal = fake.delivered_count();
    let counts = stop(&mut d);
    // SIGTERM stops receiving, but what already sat in the socket buffer is taken
    // first: every datagram sent before the signal is received and delivered.
    let received = counter(&counts, "received");
    assert_eq!(
        received, n,
        "datagrams left in the socket at SIGTERM: {counts:?}"
    );
    assert!(
        received > delivered_at_signal as u64,
        "nothing was left to drain at SIGTERM ({delivered_at_signal} delivered)"
    );
    assert_eq!(counter(&counts, "sent"), received, "{counts:?}");
    assert_eq!(counter(&counts, "dropped_at_shutdown"), 0, "{counts:?}");
    assert_eq!(counter(&counts, "spillover"), 0, "{counts:?}");
    let delivered = fake.delivered_documents();
    assert_eq!(delivered.len() as u64, received);
    // What was delivered is exactly what was received: no duplicates, all sent.
    let idx: HashSet<u64> = delivered.iter().filter_map(|d| segment_index(d)).collect();
    assert_eq!(
        idx.len(),
        delivered.len(),
        "duplicates or foreign documents"
    );
    for d in &delivered {
        let i = segment_index(d).unwrap() as usize;
        assert_eq!(d, &sent[i], "document {i} altered");
    }
}

#[test]
fn shutdown_gives_up_after_the_deadline_and_counts_the_rest() {
    let fake = FakeXray::start();
    fake.set_default(Behaviour::throttled());
    let mut d = Daemon::for_fake(
        &fake,
        &[
            "--shutdown-timeout",
            "2s",
            "--retry-base-delay",
            "50ms",
            "--retry-max-delay",
            "200ms",
        ],
        &[],
    );
    let sent = docs(0..100, 700);
    send_segments(d.udp_addr(), &sent);
    assert!(fake.wait_for_requests(2, secs(15)), "{}", fake.summary());
    let counts = stop(&mut d);
    assert_eq!(counter(&counts, "received"), 100, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), 0, "{counts:?}");
    assert_eq!(counter(&counts, "dropped_at_shutdown"), 100, "{counts:?}");
    assert!(counter(&counts, "retries") >= 1, "{counts:?}");
}

#[test]
fn concurrency_bounds_the_uploads_in_flight() {
    let fake = FakeXray::start();
    fake.set_default(Behaviour::delay(millis(150), Behaviour::Ok));
    let mut d = Daemon::for_fake(&fake, &["--concurrency", "2"], &[]);
    let sent = docs(0..500, 600);
    send_segments(d.udp_addr(), &sent);
    assert!(fake.wait_for_documents(500, DELIVERY), "{}", fake.summary());
    assert!(
        fake.max_in_flight() <= 2,
        "{} requests in flight with --concurrency 2",
        fake.max_in_flight()
    );
    stop(&mut d);
}

#[test]
fn local_sink_writes_each_segment_as_one_json_line() {
    let fake = FakeXray::start();
    let dir = scratch_dir();
    let out = dir.join("segments.jsonl");
    let out_s = out.to_str().unwrap().to_string();
    let endpoint = fake.endpoint();
    // No credentials at all: the sink needs no AWS account.
    let mut d = Daemon::spawn_in(
        dir,
        &[
            "-b",
            "127.0.0.1:0",
            "-t",
            "127.0.0.1:0",
            "-o",
            "-n",
            "us-east-1",
            "--endpoint",
            &endpoint,
            "--local-sink",
            &out_s,
        ],
        &[],
    );
    let sent = docs(0..40, 900);
    send_segments(d.udp_addr(), &sent);
    let lines_in_sink = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    poll_until(
        secs(15),
        || format!("{} of 40 lines in {}", lines_in_sink(), out.display()),
        || (lines_in_sink() >= 40).then_some(()),
    );
    let counts = stop(&mut d);
    let text = std::fs::read_to_string(&out).expect("sink file");
    assert!(text.ends_with('\n'), "every line ends with a newline");
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not one JSON document per line ({e}): {l:?}"));
    }
    assert_same_documents(&lines, &sent, "local sink lines");
    assert_eq!(fake.request_count(), 0, "nothing goes to X-Ray with a sink");
    assert_eq!(counter(&counts, "received"), 40, "{counts:?}");
}

#[test]
fn datagrams_coalesced_by_the_kernel_are_split_validated_and_delivered_one_by_one() {
    use std::os::fd::AsRawFd;
    // A sender that batches with UDP GSO: the kernel cuts each send into datagrams of one size,
    // and xrayd (with UDP GRO) receives each send as one buffer that it must split again.
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake(&fake, &[], &[]);
    let addr = d.udp_addr();
    let sent = docs(0..200, 900);
    let size = HEADER.len() + 900;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    if let Err(e) = xrayd::ingest::recvmmsg::set_udp_segment(tx.as_raw_fd(), size as u16) {
        support::skip(
            "datagrams_coalesced_by_the_kernel_are_split_validated_and_delivered_one_by_one",
            &format!("this kernel has no UDP GSO ({e})"),
        );
        return;
    }
    // Ten sends of twenty datagrams; in the fourth, a piece of the same size without a newline.
    let bad = vec![b'x'; size];
    for (k, chunk) in sent.chunks(20).enumerate() {
        let mut buf = Vec::new();
        for (j, doc) in chunk.iter().enumerate() {
            if k == 3 && j == 7 {
                buf.extend_from_slice(&bad);
            }
            buf.extend_from_slice(support::udp::datagram(doc).as_slice());
        }
        assert_eq!(buf.len() % size, 0);
        tx.send_to(&buf, addr).unwrap();
        // Pacing, not a wait: each send is twenty datagrams at once, spaced for a slow reader.
        std::thread::sleep(millis(5));
    }
    let delivered = fake.wait_for_documents(sent.len(), DELIVERY);
    let counts = stop(&mut d);
    assert!(delivered, "{counts:?}\n{}", fake.summary());
    assert_same_documents(&fake.delivered_documents(), &sent, "delivered");
    assert_eq!(counter(&counts, "received"), 201, "{counts:?}");
    assert_eq!(counter(&counts, "rejected_no_newline"), 1, "{counts:?}");
    assert_eq!(counter(&counts, "sent"), 200, "{counts:?}");
    assert!(d.log().contains("UDP GRO on"), "{}", d.log());
}

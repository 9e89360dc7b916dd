//! Shutdown of the real xrayd against FakeXray.
//!
//! - SIGTERM under load: everything received is delivered within `--shutdown-timeout`, nothing
//!   dropped, counts add up.
//! - SIGTERM during an outage: the process exits within the deadline (plus the final telemetry
//!   call, at most 1 s here, and slack), counts what it could not deliver as
//!   `dropped_at_shutdown` and says so in a warning line.
//! - SIGTERM right after X-Ray recovers from an outage: retries backed off far past the drain's
//!   deadline (and fresh batches gated by the failure streak) go at once, and all is delivered.
//! - SIGTERM with an upload in flight past the deadline: exits on time; what the daemon counts as
//!   dropped is not also counted as sent, and nothing is left "held" in the final counts.
//! - SIGKILL: the process dies at once (no final line, nothing to flush). The property: what the
//!   backend acknowledged before the kill stays delivered exactly once and byte-identical; the
//!   kill can only lose what was in memory (received, not yet acknowledged), never corrupt or
//!   duplicate what was delivered.

use xrayd_kit as support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::daemon::Daemon;
use support::udp::{Pace, send_segments_paced};
use support::{
    Behaviour, FakeXray, RecordedRequest, assert_conserved, make_segment, millis, poll_until, secs,
    segment_index,
};

const RETRY_ARGS: [&str; 4] = ["--retry-base-delay", "50ms", "--retry-max-delay", "1s"];

fn docs(range: std::ops::Range<u64>, size: usize) -> Vec<String> {
    range.map(|i| make_segment(i, size)).collect()
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec!["-l", "info"];
    v.extend_from_slice(&RETRY_ARGS);
    v.extend_from_slice(extra);
    v
}

fn assert_counts_add_up(counts: &HashMap<String, u64>) {
    assert_conserved(counts);
    assert_eq!(
        counts["segments_held"], 0,
        "held after the drain: {counts:?}"
    );
}

fn count_each(v: &[String]) -> HashMap<&str, usize> {
    let mut m: HashMap<&str, usize> = HashMap::new();
    for d in v {
        *m.entry(d.as_str()).or_default() += 1;
    }
    m
}

/// SIGTERM, then the exit status and how long the exit took.
fn term(d: &mut Daemon, limit: Duration) -> Duration {
    let t0 = Instant::now();
    d.sigterm();
    let status = d.wait_exit(limit + secs(20));
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took <= limit, "exit took {took:?}, limit {limit:?}");
    took
}

#[test]
fn sigterm_under_load_drains_everything() {
    let fake = FakeXray::start();
    // Each call takes 100 ms, so a backlog exists at SIGTERM.
    fake.set_default(Behaviour::delay(millis(100), Behaviour::Ok));
    let mut d = Daemon::for_fake(
        &fake,
        &args(&["--shutdown-timeout", "20s", "--concurrency", "2"]),
        &[],
    );
    let addr = d.udp_addr();
    let want = docs(0..2000, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    let before = fake.delivered_count();
    let took = term(&mut d, secs(25));
    let counts = d.final_counts();
    assert_counts_add_up(&counts);
    assert_eq!(counts["received"], 2000, "{counts:?}");
    assert_eq!(counts["dropped_at_shutdown"], 0, "{counts:?}");
    assert_eq!(counts["sent"], 2000, "{counts:?}");
    let got = fake.delivered_documents();
    let n = count_each(&got);
    assert!(
        got.len() == want.len() && want.iter().all(|w| n.get(w.as_str()) == Some(&1)),
        "delivered {} of {}",
        got.len(),
        want.len()
    );
    println!(
        "shutdown under load: {} of 2000 delivered before SIGTERM, the rest in {:.1}s of drain",
        before,
        took.as_secs_f64()
    );
}

#[test]
fn sigterm_during_outage_reports_what_it_dropped() {
    let fake = FakeXray::start();
    fake.set_default(Behaviour::service_unavailable());
    let mut d = Daemon::for_fake(&fake, &args(&["--shutdown-timeout", "2s"]), &[]);
    let addr = d.udp_addr();
    let tcp = d.tcp_addr();
    let want = docs(0..200, 300);
    send_segments_paced(addr, &want, Pace::GENTLE);
    assert!(fake.wait_for_requests(2, secs(30)), "{}", fake.summary());
    // All 200 taken in, and two calls have failed in the daemon's eyes.
    support::wait_for_sample(
        tcp,
        "xrayd_segments_received_total",
        secs(30),
        "all 200 received",
        |n| n == 200,
    );
    support::wait_for_sample(
        tcp,
        r#"xrayd_upload_errors_total{class="http_5xx"}"#,
        secs(30),
        "two failed calls",
        |n| n >= 2,
    );
    // Deadline 2 s + the final telemetry call (at most 1 s once the deadline has passed) + slack.
    let took = term(&mut d, secs(6));
    let counts = d.final_counts();
    assert_counts_add_up(&counts);
    assert_eq!(counts["received"], 200, "{counts:?}");
    assert_eq!(counts["sent"], 0, "{counts:?}");
    assert_eq!(counts["dropped_at_shutdown"], 200, "{counts:?}");
    assert!(counts["backend_http_5xx"] >= 2, "{counts:?}");
    assert_eq!(fake.delivered_count(), 0);
    let warning = d
        .wait_for_line("Shutdown timeout of 2.0 seconds reached", secs(1))
        .unwrap_or_else(|| panic!("no shutdown-timeout warning:\n{}", d.log()));
    assert!(warning.contains("dropped 200 segments"), "{warning}");
    // The expected warning, without its timestamp and level tag (a green run shows no `[Warn]`).
    let message = warning
        .split_once("] ")
        .map_or(warning.as_str(), |(_, m)| m);
    println!(
        "shutdown during outage: exited {:.1}s after SIGTERM, as expected saying: {message}",
        took.as_secs_f64()
    );
}

#[test]
fn sigterm_after_recovery_delivers_retries_backed_off_past_the_deadline() {
    let fake = FakeXray::start();
    fake.set_default(Behaviour::service_unavailable());
    // The first retry waits 20-40 s and three failures gate fresh batches as long: all far past
    // the 5 s drain.
    let mut d = Daemon::for_fake(
        &fake,
        &[
            "-l",
            "info",
            "--retry-base-delay",
            "40s",
            "--retry-max-delay",
            "60s",
            "--shutdown-timeout",
            "5s",
        ],
        &[],
    );
    let addr = d.udp_addr();
    let first = docs(0..200, 300);
    send_segments_paced(addr, &first, Pace::GENTLE);
    assert!(fake.wait_for_answered(4, secs(30)), "{}", fake.summary());
    d.wait_for_line("retry 1 in", secs(10))
        .unwrap_or_else(|| panic!("no retry line:\n{}", d.log()));
    // More arrive behind the gate, then X-Ray recovers.
    let second = docs(200..300, 300);
    send_segments_paced(addr, &second, Pace::GENTLE);
    fake.set_default(Behaviour::Ok);
    let took = term(&mut d, secs(10));
    let counts = d.final_counts();
    assert_counts_add_up(&counts);
    assert_eq!(counts["received"], 300, "{counts:?}");
    assert_eq!(counts["dropped_at_shutdown"], 0, "{counts:?}");
    assert_eq!(counts["sent"], 300, "{counts:?}");
    let got = fake.delivered_documents();
    let n = count_each(&got);
    assert!(
        first
            .iter()
            .chain(&second)
            .all(|w| n.get(w.as_str()) == Some(&1)),
        "delivered {} of 300: {}",
        got.len(),
        fake.summary()
    );
    println!(
        "SIGTERM after recovery: 300 delivered in {:.1}s of drain ({} retries)",
        took.as_secs_f64(),
        counts["retries"]
    );
}

/// xrayd (`--shutdown-timeout 1s`) sent 50 segments; returns once its first upload is in
/// flight, which the fake answers after 1.5 s: past the 1 s deadline.
fn upload_in_flight_past_deadline() -> (FakeXray, Daemon) {
    let fake = FakeXray::start();
    fake.set_script(vec![Behaviour::delay(millis(1500), Behaviour::Ok)]);
    let d = Daemon::for_fake(
        &fake,
        &args(&["--shutdown-timeout", "1s", "--upload-timeout", "5s"]),
        &[],
    );
    send_segments_paced(d.udp_addr(), &docs(0..50, 300), Pace::GENTLE);
    assert!(fake.wait_for_requests(1, secs(30)), "{}", fake.summary());
    (fake, d)
}

#[test]
fn sigterm_with_upload_in_flight_past_deadline() {
    let (fake, mut d) = upload_in_flight_past_deadline();
    let took = term(&mut d, secs(6));
    let counts = d.final_counts();
    // Let the fake record (or retract) its late answer: every call it took is answered.
    let calls = fake.request_count();
    assert!(
        fake.wait_for_answered(calls, secs(10)),
        "{}",
        fake.summary()
    );
    let delivered = fake.delivered_count() as u64;
    println!(
        "in flight at the deadline: exited after {:.1}s; sent={} dropped_at_shutdown={} segments_held={}; fake delivered {delivered}",
        took.as_secs_f64(),
        counts["sent"],
        counts["dropped_at_shutdown"],
        counts["segments_held"]
    );
    assert_eq!(counts["received"], 50, "{counts:?}");
    assert!(took <= secs(3), "{took:?}");
    // Conservation holds; `segments_held` is checked by the in-flight test below.
    assert_conserved(&counts);
    assert!(
        delivered <= counts["sent"] + counts["dropped_at_shutdown"],
        "{counts:?}"
    );
}

#[test]
fn sigkill_keeps_what_was_delivered_intact() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake(&fake, &args(&[]), &[]);
    let addr = d.udp_addr();
    let first = docs(0..100, 500);
    send_segments_paced(addr, &first, Pace::GENTLE);
    assert!(fake.wait_for_documents(100, secs(60)), "{}", fake.summary());
    // Now every call hangs: the next documents are in memory (queued or in flight) at the kill.
    fake.set_default(Behaviour::delay(secs(30), Behaviour::Ok));
    let second = docs(100..200, 500);
    send_segments_paced(addr, &second, Pace::GENTLE);
    // Once a (hanging) call carries some of the second 100, they are in memory.
    let carries_second = |r: &RecordedRequest| r.documents.iter().any(|d| second.contains(d));
    poll_until(
        secs(30),
        || fake.summary(),
        || fake.requests().iter().any(carries_second).then_some(()),
    );
    let t0 = Instant::now();
    d.signal(libc::SIGKILL);
    let status = d.wait_exit(secs(10));
    assert!(t0.elapsed() < secs(5), "SIGKILL took {:?}", t0.elapsed());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        d.wait_for_line("Final counts:", millis(200)).is_none(),
        "a killed process cannot print its final counts"
    );
    let got = fake.delivered_documents();
    let n = count_each(&got);
    for w in &first {
        assert_eq!(
            n.get(w.as_str()),
            Some(&1),
            "document {:?} acknowledged before the kill is not delivered exactly once",
            segment_index(w)
        );
    }
    let sent: std::collections::HashSet<&str> = first
        .iter()
        .chain(second.iter())
        .map(String::as_str)
        .collect();
    assert!(
        got.iter().all(|g| sent.contains(g.as_str())),
        "a delivered document differs from every document sent"
    );
    println!(
        "SIGKILL: {} delivered before the kill intact; {} of the 100 in memory lost",
        first.len(),
        100 - (got.len() - first.len())
    );
}

/// When the shutdown deadline passes with a batch in flight, its segments count once, as
/// `dropped_at_shutdown` (outcome unknown), and nothing is left in `segments_held`; a late answer
/// is not counted on top.
#[test]
fn in_flight_batch_is_not_left_held_after_shutdown() {
    let (_fake, mut d) = upload_in_flight_past_deadline();
    term(&mut d, secs(6));
    let counts = d.final_counts();
    assert_counts_add_up(&counts);
}

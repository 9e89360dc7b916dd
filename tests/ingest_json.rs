//! What ingest accepts as a segment document, with the real xrayd and FakeXray:
//! - valid JSON that simd-json cannot decode (escaped lone surrogates as SDKs send them, numbers
//!   beyond f64, nesting of thousands of levels) is delivered byte-exact and counted as received
//!   and sent, not rejected;
//! - a bad JSON body is logged with the rule it breaks and where, and rejections held back by the
//!   rate limit are reported when the interval ends, without waiting for another datagram.

use xrayd_kit as support;

use std::time::{Duration, Instant};
use support::daemon::Daemon;
use support::udp::datagram;
use support::{FakeXray, assert_conserved, secs, send_raw};

/// The interval of rejection summaries (`ingest::SUMMARY_INTERVAL`).
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

fn stop(d: &mut Daemon) -> std::collections::HashMap<String, u64> {
    d.sigterm();
    let status = d.wait_exit(secs(30));
    assert!(status.success(), "xrayd exited with {status:?}");
    let counts = d.final_counts();
    assert_conserved(&counts);
    counts
}

#[test]
fn valid_json_simd_json_refuses_is_delivered_byte_exact() {
    let deep = |open: &str, close: &str, n: usize| {
        format!(
            "{{\"id\":\"deep-{n}\",\"a\":{}0{}}}",
            open.repeat(n),
            close.repeat(n)
        )
    };
    let docs = vec![
        // JSON.stringify("🚀".slice(0, 1)), Python's json.dumps of a surrogate-escaped string.
        r#"{"id":"lone-high","name":"svc","annotations":{"s":"\ud83d"}}"#.to_string(),
        r#"{"id":"lone-low","metadata":{"s":"caf\udce9"}}"#.to_string(),
        r#"{"id":"reversed-pair","s":"\udc00\ud800"}"#.to_string(),
        r#"{"id":"big-numbers","a":1e400,"b":-1e400,"c":1E+400}"#.to_string(),
        deep("[", "]", 5000),
        deep("{\"k\":", "}", 2000),
        deep("[", "]", 32_000),
    ];
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake_with_level(&fake, None, &[], &[]);
    let datagrams: Vec<Vec<u8>> = docs.iter().map(|doc| datagram(doc)).collect();
    let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    send_raw(d.udp_addr(), &refs);

    assert!(
        fake.wait_for_documents(docs.len(), secs(60)),
        "{}",
        fake.summary()
    );
    let counts = stop(&mut d);
    let mut delivered = fake.delivered_documents();
    delivered.sort();
    let mut want = docs.clone();
    want.sort();
    assert!(
        delivered == want,
        "delivered documents differ from those sent"
    );
    assert_eq!(counts["received"], docs.len() as u64, "{counts:?}");
    assert_eq!(counts["sent"], docs.len() as u64, "{counts:?}");
    assert_eq!(counts["rejected"], 0, "{counts:?}");
    assert_eq!(d.count_lines("Rejected"), 0, "{}", d.log());
}

#[test]
fn bad_json_names_its_rule_and_held_back_rejections_are_reported_on_time() {
    let fake = FakeXray::start();
    let mut d = Daemon::for_fake_with_level(&fake, None, &[], &[]);
    // One burst of four, then nothing.
    let bad = [
        datagram("{\"name\":\"svc\",\"id\":\"x\\q\"}"),
        datagram("{\"a\":1,}"),
        datagram("[1]"),
        b"no newline".to_vec(),
    ];
    let refs: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
    send_raw(d.udp_addr(), &refs);

    let first = d
        .wait_for_line("Rejected a datagram", secs(30))
        .unwrap_or_else(|| panic!("no rejection line:\n{}", d.log()));
    let seen = Instant::now();
    assert!(
        first.contains("[Warn] Rejected a datagram of 55 bytes: segment is not a valid JSON object (invalid escape at byte 21 of the segment)"),
        "{first}"
    );
    let summary = d
        .wait_for_line(
            "Rejected 3 more datagrams since the last report",
            SUMMARY_INTERVAL * 3,
        )
        .unwrap_or_else(|| panic!("no summary of the held-back rejections:\n{}", d.log()));
    assert!(summary.contains("[Warn] "), "{summary}");
    assert!(
        seen.elapsed() >= SUMMARY_INTERVAL / 2,
        "the summary did not wait for the interval: {:?}",
        seen.elapsed()
    );
    let counts = stop(&mut d);
    assert_eq!(counts["rejected"], 4, "{counts:?}");
    assert_eq!(counts["rejected_bad_json"], 3, "{counts:?}");
    assert_eq!(d.count_lines("Rejected"), 2, "{}", d.log());
}

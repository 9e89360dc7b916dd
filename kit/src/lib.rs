//! xrayd's test kit, shared by the integration tests and the benchmark harness: hand-written
//! SHA-256/HMAC, an independent SigV4 verifier, one fake AWS endpoint (X-Ray, sampling, STS,
//! container and instance-metadata credentials) and its fast counting sibling for benchmarks
//! (with the benchmark segment format), one HTTP wire implementation, one runner for the real
//! daemon binary and for every child process, UDP senders, an HTTP client, a Prometheus parser,
//! scratch directories, hermetic environments, condition waits and the skip report. It treats
//! xrayd as a black box: nothing here imports the daemon's library.

pub mod answers;
pub mod bench_segment;
pub mod capture;
pub mod crypto;
pub mod daemon;
pub mod env;
pub mod fake_xray;
pub mod fast_xray;
pub mod http;
pub mod metrics;
pub mod process;
pub mod sigv4;
pub mod skip;
pub mod sso;
pub mod tempdir;
pub mod udp;
pub mod wait;
pub mod wire;

pub use answers::{Answer, DEFAULT_RULES, creds_json, rfc3339_in, sts_error, sts_ok};
pub use crypto::{hex, hmac_sha256, sha256, sha256_hex};
pub use daemon::{
    Daemon, local_sink_args, parse_final_counts, parse_listening_line, parse_proxy_line,
};
pub use env::{Env, hermetic_command};
pub use fake_xray::{
    Behaviour, FakeConfig, FakeXray, RandomFaults, RecordedRequest, TEST_ACCESS_KEY, TEST_REGION,
    TEST_SECRET_KEY, document_id,
};
pub use fast_xray::FastXray;
pub use http::{json_headers, one_shot};
pub use metrics::{Exposition, parse_prometheus, sample, scrape, wait_for_sample};
pub use process::{Proc, Ran, SpawnOptions, pin_current_thread, run_to_end};
pub use sigv4::{SigCheck, Verifier, WireRequest};
pub use skip::{run_or_skip, skip};
pub use tempdir::{TempDir, scratch_dir};
pub use udp::{
    Pace, make_segment, sdk_datagram, segment_id, segment_index, send_datagrams, send_raw,
    send_segments, small_segment,
};
pub use wait::{poll, poll_until, wait_for_file};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Send documents (one datagram each) in chunks, waiting after each chunk until
/// `fake` has received all but `window` of them, so that the kernel's UDP
/// receive buffer can never overflow whatever the daemon's speed. Only for
/// fakes that accept the uploads; the last partial batch is not waited for.
/// Returns false if the fake stopped making progress for `stall` (the caller's
/// assertions will then say what is missing).
pub fn send_with_flow_control<S: AsRef<str>>(
    addr: SocketAddr,
    docs: &[S],
    fake: &FakeXray,
    window: usize,
    stall: Duration,
) -> bool {
    let sock = udp::sender_for(addr);
    let mut sent = 0usize;
    for chunk in docs.chunks(50) {
        for d in chunk {
            sock.send_to(&udp::datagram(d.as_ref()), addr)
                .expect("UDP send");
        }
        sent += chunk.len();
        // Wait until the fake has seen enough documents (in any request).
        let want = sent.saturating_sub(window);
        if want > 0 && !fake.wait_for_received_documents(want, stall) {
            return false;
        }
    }
    true
}

/// The conservation law of the final counts: every segment received is rejected, sent, or
/// counted under exactly one of the drop counters.
pub fn assert_conserved(counts: &HashMap<String, u64>) {
    let k = |n: &str| {
        *counts
            .get(n)
            .unwrap_or_else(|| panic!("no counter {n:?} in {counts:?}"))
    };
    assert_eq!(
        k("received"),
        k("rejected")
            + k("sent")
            + k("unprocessed")
            + k("rejected_by_xray")
            + k("spillover")
            + k("dropped_at_shutdown"),
        "received = rejected + sent + unprocessed + rejected_by_xray + spillover + dropped_at_shutdown: {counts:?}"
    );
}

/// Shorthand for durations in tests.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

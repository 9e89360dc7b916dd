//! xrayd's test kit, shared by the integration tests and the benchmark harness: hand-written
//! SHA-256/HMAC, an independent SigV4 verifier, a fake X-Ray service, a runner for the real daemon
//! binary and helpers to send segments over UDP. It treats xrayd as a black box: nothing here
//! imports the daemon's library.

pub mod crypto;
pub mod daemon;
pub mod fake_xray;
pub mod http;
pub mod sigv4;
pub mod udp;

pub use crypto::{hex, hmac_sha256, sha256, sha256_hex};
pub use daemon::{Daemon, parse_final_counts, parse_listening_line};
pub use fake_xray::{
    Behaviour, FakeConfig, FakeXray, RandomFaults, RecordedRequest, TEST_ACCESS_KEY, TEST_REGION,
    TEST_SECRET_KEY, document_id,
};
pub use sigv4::{SigCheck, Verifier, WireRequest};
pub use udp::{Pace, make_segment, segment_id, segment_index, send_raw, send_segments};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Polls `probe` every 20 ms until it returns `Some`, and returns that value; after `timeout`,
/// panics with `what()`. For states the daemon reaches at a moment of its own.
pub fn poll_until<T>(
    timeout: Duration,
    what: impl FnOnce() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("not within {timeout:?}: {}", what());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

//! `GET /metrics` of the real xrayd process: parsed with a strict Prometheus text-format parser,
//! its counters match a known mix of UDP and TCP traffic, and agree with the shutdown line.

use xrayd_kit as support;

use std::net::SocketAddr;

use support::{Daemon, Exposition, FakeXray, make_segment, one_shot, scrape, secs};

fn spawn(fake: &FakeXray) -> (Daemon, SocketAddr, SocketAddr) {
    let endpoint = fake.endpoint();
    // Test credentials in the environment; no `-l`: the default level.
    let d = Daemon::for_endpoint_with_level(
        &endpoint,
        None,
        &[
            "-m",
            "3",
            "--retry-base-delay",
            "50ms",
            "--retry-max-delay",
            "200ms",
        ],
        &[],
    );
    let udp = d.udp_addr();
    let tcp = d.tcp_addr();
    (d, udp, tcp)
}

fn wait_metric(tcp: SocketAddr, what: &str, pred: impl Fn(&Exposition) -> bool) -> Exposition {
    let mut last = None;
    support::poll(secs(10), || {
        let e = scrape(tcp);
        if pred(&e) {
            return Some(e);
        }
        last = Some(e);
        None
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}: {last:?}"))
}

#[test]
fn counters_match_a_known_traffic_mix() {
    let fake = FakeXray::start();
    fake.answer(
        "/SamplingTargets",
        429,
        r#"{"__type":"ThrottledException","message":"Rate exceeded"}"#,
    );
    let (mut d, udp, tcp) = spawn(&fake);
    // The TCP port opens before UDP ingest starts: not ready until then.
    let first = wait_metric(tcp, "ingest running", |e| {
        e.value("xrayd_ingest_running", &[]) == 1.0
    });
    assert_eq!(first.value("xrayd_segments_received_total", &[]), 0.0);
    assert_eq!(first.value("xrayd_ready", &[]), 1.0);
    assert_eq!(
        first.value("xrayd_buffer_budget_bytes", &[]),
        3.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        first.value(
            "xrayd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for t in [
        "xrayd_segments_rejected_total",
        "xrayd_upload_errors_total",
        "xrayd_proxy_requests_total",
    ] {
        assert_eq!(
            first.types.get(t).map(String::as_str),
            Some("counter"),
            "{t}"
        );
    }
    assert_eq!(
        first
            .types
            .get("xrayd_upload_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    // UDP: 20 good segments, 3 without a newline, 2 with a bad header, 4 with bad JSON.
    let docs: Vec<String> = (0..20).map(|i| make_segment(i, 500)).collect();
    support::send_segments(udp, &docs);
    let mut raw: Vec<Vec<u8>> = Vec::new();
    raw.extend((0..3).map(|i| format!("no newline {i}").into_bytes()));
    raw.extend((0..2).map(|_| b"{\"format\":\"xml\",\"version\":1}\n{}".to_vec()));
    raw.extend((0..4).map(|_| b"{\"format\":\"json\",\"version\":1}\n{not json".to_vec()));
    let refs: Vec<&[u8]> = raw.iter().map(Vec::as_slice).collect();
    support::send_raw(udp, &refs);

    // TCP: 3 rules calls (200), 2 targets calls (429 from X-Ray), 1 unknown path, 1 wrong
    // method, 1 healthz, 1 readyz.
    for _ in 0..3 {
        assert_eq!(
            one_shot(tcp, "POST", "/GetSamplingRules", b"{}").status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(one_shot(tcp, "POST", "/SamplingTargets", b"{}").status, 429);
    }
    assert_eq!(
        one_shot(tcp, "POST", "/PutTraceSegments", b"{}").status,
        404
    );
    assert_eq!(one_shot(tcp, "GET", "/SamplingTargets", b"").status, 405);
    assert_eq!(one_shot(tcp, "GET", "/healthz", b"").status, 200);
    assert_eq!(one_shot(tcp, "GET", "/readyz", b"").status, 200);

    assert!(fake.wait_documents(20, secs(10)), "{:?}", fake.seen().len());
    let e = wait_metric(tcp, "20 segments sent", |e| {
        e.value("xrayd_segments_sent_total", &[]) == 20.0
            && e.value("xrayd_segments_received_total", &[]) == 29.0
    });
    let reason = |r: &str| e.value("xrayd_segments_rejected_total", &[("reason", r)]);
    assert_eq!(
        (
            reason("no_newline"),
            reason("bad_header"),
            reason("bad_json"),
            reason("too_large")
        ),
        (3.0, 2.0, 4.0, 0.0)
    );
    assert_eq!(e.value("xrayd_segments_spillover_total", &[]), 0.0);
    assert_eq!(e.value("xrayd_segments_unprocessed_total", &[]), 0.0);
    assert_eq!(e.value("xrayd_upload_retries_total", &[]), 0.0);
    assert_eq!(e.sum("xrayd_upload_errors_total"), 0.0);
    assert_eq!(e.value("xrayd_buffered_segments", &[]), 0.0);
    assert_eq!(e.value("xrayd_buffered_bytes", &[]), 0.0);
    assert_eq!(e.value("xrayd_batches_in_flight", &[]), 0.0);
    let batches = e.value("xrayd_batches_sent_total", &[]);
    assert_eq!(batches as usize, fake.seen_on("/TraceSegments").len());
    assert_eq!(e.value("xrayd_upload_duration_seconds_count", &[]), batches);
    assert!(e.value("xrayd_upload_duration_seconds_sum", &[]) > 0.0);
    let proxied = |p: &str, s: &str| {
        e.get("xrayd_proxy_requests_total", &[("path", p), ("status", s)])
            .unwrap_or(0.0)
    };
    assert_eq!(proxied("/GetSamplingRules", "200"), 3.0);
    assert_eq!(proxied("/SamplingTargets", "429"), 2.0);
    assert_eq!(proxied("other", "404"), 1.0);
    assert_eq!(proxied("/SamplingTargets", "405"), 1.0);
    assert_eq!(proxied("/healthz", "200"), 1.0);
    assert_eq!(proxied("/readyz", "200"), 1.0);
    // Every scrape so far was counted too (each one before the current).
    let scrapes = proxied("/metrics", "200");
    assert!(scrapes >= 1.0, "{scrapes}");
    assert_eq!(
        e.sum("xrayd_proxy_requests_total"),
        3.0 + 2.0 + 1.0 + 1.0 + 1.0 + 1.0 + scrapes
    );

    // X-Ray fails: retries and errors are counted and the failure streak shows.
    fake.fail_segments(true);
    support::send_segments(udp, &[make_segment(100, 500)]);
    let e = wait_metric(tcp, "a failed upload", |e| {
        e.value("xrayd_upload_retries_total", &[]) >= 2.0
    });
    assert!(e.value("xrayd_upload_errors_total", &[("class", "http_5xx")]) >= 2.0);
    assert!(e.value("xrayd_upload_failing_seconds", &[]) > 0.0);
    assert_eq!(e.value("xrayd_buffered_segments", &[]), 1.0);
    fake.fail_segments(false);
    let e = wait_metric(tcp, "the retried segment", |e| {
        e.value("xrayd_segments_sent_total", &[]) == 21.0
    });
    assert_eq!(e.value("xrayd_upload_failing_seconds", &[]), 0.0);
    assert_eq!(
        e.value("xrayd_upload_duration_seconds_count", &[]),
        e.value("xrayd_batches_sent_total", &[]) + e.value("xrayd_upload_retries_total", &[])
    );

    // The shutdown line reads the same counters.
    d.sigterm();
    assert!(d.wait_exit(secs(15)).success());
    let fin = d.final_counts();
    assert_eq!(
        fin["received"] as f64,
        e.value("xrayd_segments_received_total", &[])
    );
    assert_eq!(
        fin["sent"] as f64,
        e.value("xrayd_segments_sent_total", &[])
    );
    assert_eq!(
        fin["retries"] as f64,
        e.value("xrayd_upload_retries_total", &[])
    );
    assert_eq!(fin["rejected_bad_json"], 4);
}

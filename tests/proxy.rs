//! The TCP port of the real xrayd process: the start-up wiring (log lines, bind failure, no
//! credentials, upstream down) and X-Ray's refusals. The real SDKs' centralized sampling through
//! this port is proved in `tests/sdk_conformance.rs`.

use xrayd_kit as support;

use std::time::Duration;

use support::{Daemon, FakeXray, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, one_shot, secs};
use xrayd::proxy::routes::SAMPLING_PATHS;

#[test]
fn daemon_serves_the_tcp_port_and_logs_its_address() {
    let fake = FakeXray::start();
    let d = Daemon::for_endpoint(&fake.endpoint(), &[], true);
    let tcp = d.tcp_addr();
    assert_ne!(tcp.port(), 0);
    assert!(
        d.wait_for_line(
            &format!(
                "HTTP Proxy server using X-Ray Endpoint : {}",
                fake.endpoint()
            ),
            secs(5)
        )
        .is_some(),
        "{}",
        d.log()
    );
    assert_eq!(d.count_lines("not available"), 0, "{}", d.log());
    assert_eq!(one_shot(tcp, "GET", "/healthz", b"").status, 200);
    // The TCP port opens before UDP ingest starts: ready once it has.
    let r = support::poll_until(
        secs(10),
        || d.log(),
        || Some(one_shot(tcp, "GET", "/readyz", b"")).filter(|r| r.status == 200),
    );
    assert_eq!(r.text(), "ready\n");
    let r = one_shot(tcp, "POST", "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(fake.seen_on("/GetSamplingRules")[0].signature.is_ok());
    let r = one_shot(tcp, "POST", "/TraceSegments", b"{}");
    assert_eq!(r.status, 404);
    assert_eq!(fake.seen_on("/TraceSegments").len(), 0);
}

#[test]
fn bind_failure_of_the_tcp_port_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut d = Daemon::spawn(
        &[
            "-b",
            "127.0.0.1:0",
            "-t",
            &addr,
            "-o",
            "-n",
            TEST_REGION,
            "--endpoint",
            "http://127.0.0.1:9",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY),
        ],
    );
    let status = d.wait_exit(secs(10));
    assert_eq!(status.code(), Some(1), "{}", d.log());
    assert!(
        d.log().contains(&format!(
            "Cannot listen on TCP {addr} for the sampling proxy"
        )),
        "{}",
        d.log()
    );
}

#[test]
fn without_credentials_sampling_calls_get_503_and_nothing_is_forwarded() {
    let fake = FakeXray::start();
    let d = Daemon::for_endpoint(&fake.endpoint(), &[], false);
    let tcp = d.tcp_addr();
    let r = one_shot(
        tcp,
        "POST",
        "/SamplingTargets",
        br#"{"SamplingStatisticsDocuments":[]}"#,
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("no AWS credentials"), "{}", r.text());
    let r = one_shot(tcp, "GET", "/readyz", b"");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no AWS credentials"), "{}", r.text());
    assert_eq!(one_shot(tcp, "GET", "/healthz", b"").status, 200);
    // Nothing is forwarded unsigned: the absence is checked over a while, which is the scenario.
    std::thread::sleep(Duration::from_millis(200));
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

#[test]
fn upstream_down_gives_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = Daemon::for_endpoint(&format!("http://{closed}"), &[], true);
    let tcp = d.tcp_addr();
    let r = one_shot(tcp, "POST", "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("cannot be reached"), "{}", r.text());
    assert!(
        d.wait_for_line("Sampling proxy: answered 502", secs(5))
            .is_some(),
        "{}",
        d.log()
    );
}

#[test]
fn refusals_by_x_ray_are_logged_once_with_the_missing_permission() {
    let fake = FakeXray::start();
    let denied = r#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::123456789012:assumed-role/app/i-1 is not authorized to perform: xray:GetSamplingRules"}"#;
    fake.answer("/GetSamplingRules", 403, denied);
    fake.answer(
        "/SamplingTargets",
        403,
        &denied.replace("GetSamplingRules", "GetSamplingTargets"),
    );
    fake.answer_typed(
        "/SamplingStatisticSummaries",
        404,
        "text/html",
        "<html>Not Found</html>",
    );
    let d = Daemon::for_endpoint(&fake.endpoint(), &[], true);
    let tcp = d.tcp_addr();
    for _ in 0..3 {
        for path in SAMPLING_PATHS {
            let r = one_shot(tcp, "POST", path, b"{}");
            assert!(r.status == 403 || r.status == 404, "{path}: {}", r.status);
        }
    }
    for (path, hint) in [
        ("/GetSamplingRules", "IAM permission xray:GetSamplingRules"),
        ("/SamplingTargets", "IAM permission xray:GetSamplingTargets"),
        ("/SamplingStatisticSummaries", "check --endpoint"),
    ] {
        let line = d
            .wait_for_line(&format!("X-Ray refused POST {path}:"), secs(5))
            .unwrap_or_else(|| panic!("no refusal logged for {path}:\n{}", d.log()));
        assert!(line.contains("[Warn]"), "{line}");
        assert!(line.contains(hint), "{line}");
        assert_eq!(
            d.count_lines(&format!("X-Ray refused POST {path}:")),
            1,
            "rate-limited:\n{}",
            d.log()
        );
    }
    let line = d
        .wait_for_line("X-Ray refused POST /SamplingTargets:", secs(1))
        .unwrap();
    assert!(line.contains("403 AccessDeniedException"), "{line}");
}

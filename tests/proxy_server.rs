//! The TCP port in-process (library API, short timeouts): forwarding, safety limits, slow and
//! concurrent clients, upstream failures, readiness driven by the real upload pipeline, and the
//! `xrayd health` probe.

use xrayd_kit as support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use support::http::Client;
use support::{
    FakeXray, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, json_headers, one_shot, scrape,
};
use xrayd::aws::credentials::{
    Credentials, CredentialsError, NoCredentials, ProvideCredentials, StaticProvider,
};
use xrayd::proxy::{Config, Options, Server, Upstream};
use xrayd::stats::Stats;
use xrayd::xray::client::ClientConfig;

fn test_creds() -> Arc<dyn ProvideCredentials> {
    Arc::new(StaticProvider::new(
        Credentials::new(TEST_ACCESS_KEY, TEST_SECRET_KEY, None, None, "test"),
        "test",
    ))
}

fn client_config(endpoint: &str) -> ClientConfig {
    ClientConfig {
        endpoint: endpoint.to_string(),
        region: TEST_REGION.to_string(),
        user_agent: "xrayd-test".into(),
        timeout: Duration::from_secs(5),
        proxy: None,
        max_idle: 4,
        no_verify_ssl: false,
    }
}

fn upstream(endpoint: &str, creds: Arc<dyn ProvideCredentials>, timeout: Duration) -> Upstream {
    Upstream::new(&client_config(endpoint), creds, timeout).expect("upstream")
}

fn fast_options() -> Options {
    Options {
        read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(2),
        ready_failure_threshold: Duration::from_secs(1),
        max_body: 4096,
        ..Options::default()
    }
}

struct Running {
    server: Server,
    stats: Arc<Stats>,
}

impl Running {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// The proxy logs in this process: its lines go to a sink, not to the terminal of a green run
/// (the tests read what they check from answers and metrics).
fn quiet_log() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        xrayd::log::init(
            xrayd::log::Level::Info,
            xrayd::log::Format::Text,
            xrayd::log::Output::Writer(Box::new(std::io::sink())),
        )
        .expect("log init");
    });
}

fn start_with(upstream: Option<Upstream>, options: Options, stats: Arc<Stats>) -> Running {
    quiet_log();
    stats.ingest_running.store(true, Relaxed);
    let server = Server::start(Config {
        bind: "127.0.0.1:0".into(),
        options,
        upstream,
        stats: stats.clone(),
        budget_bytes: 8 << 20,
        local_sink: false,
    })
    .expect("start server");
    Running { server, stats }
}

fn start(fake: &FakeXray, options: Options) -> Running {
    start_with(
        Some(upstream(
            &fake.endpoint(),
            test_creds(),
            Duration::from_secs(5),
        )),
        options,
        Arc::new(Stats::default()),
    )
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// True when the peer closed the connection (EOF or reset) within `timeout`.
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn read_all(s: &mut TcpStream, timeout: Duration) -> String {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn forwards_signed_with_path_and_body_untouched_over_reused_connections() {
    let fake = FakeXray::start();
    let p = start(&fake, fast_options());
    let mut c = Client::connect(p.addr()).unwrap();
    let body = br#"{"SamplingStatisticsDocuments":[{"RuleName":"r","ClientID":"0123456789abcdef01234567","RequestCount":3,"SampledCount":1,"BorrowCount":0,"Timestamp":1700000000,"Boost":{"x":1}}]}"#;
    let mut headers = json_headers();
    for (k, v) in [
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=EVIL/20200101/us-east-1/xray/aws4_request, SignedHeaders=host, Signature=00",
        ),
        ("X-Amz-Date", "20000101T000000Z"),
        ("X-Amz-Security-Token", "client-token"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("X-Custom", "client-only"),
        ("Accept-Encoding", "gzip"),
    ] {
        headers.push((k.into(), v.into()));
    }
    for i in 0..10 {
        let path = if i % 2 == 0 {
            "/SamplingTargets"
        } else {
            "/GetSamplingRules"
        };
        let b: &[u8] = if i % 2 == 0 { body } else { b"{}" };
        let r = c.request("POST", path, &headers, b).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = json(&r.body);
        if i % 2 == 0 {
            assert_eq!(v["SamplingTargetDocuments"][0]["RuleName"], "r");
        } else {
            // Unknown fields pass through untouched.
            assert_eq!(
                v["SamplingRuleRecords"][0]["SamplingRule"]["Boost"]["NewField"],
                "passed through"
            );
        }
    }
    let seen = fake.seen();
    assert_eq!(seen.len(), 10);
    for (i, s) in seen.iter().enumerate() {
        assert!(s.signature.is_ok(), "request {i}: {:?}", s.signature);
        assert_eq!(s.method, "POST");
        let (path, b): (&str, &[u8]) = if i % 2 == 0 {
            ("/SamplingTargets", body)
        } else {
            ("/GetSamplingRules", b"{}")
        };
        assert_eq!(s.path, path);
        assert_eq!(s.body, b, "body forwarded byte for byte");
        for h in [
            "x-custom",
            "proxy-authorization",
            "keep-alive",
            "te",
            "upgrade",
            "x-amz-security-token",
            "accept-encoding",
            "content-encoding",
        ] {
            assert_eq!(s.header(h), None, "{h} must not be forwarded");
        }
        assert!(s.header("authorization").unwrap().contains(TEST_ACCESS_KEY));
        assert_ne!(s.header("x-amz-date"), Some("20000101T000000Z"));
        assert_eq!(s.header("content-type"), Some("application/json"));
    }
    assert_eq!(fake.connections(), 1, "one upstream connection, reused");
    let e = scrape(p.addr());
    assert_eq!(e.proxy_requests("/SamplingTargets", "200"), 5.0);
    assert_eq!(e.proxy_requests("/GetSamplingRules", "200"), 5.0);
}

#[test]
fn upstream_errors_pass_through_with_status_body_and_error_type() {
    let fake = FakeXray::start();
    let throttled = r#"{"__type":"ThrottledException","message":"Rate exceeded"}"#;
    fake.answer("/SamplingTargets", 429, throttled);
    fake.answer(
        "/GetSamplingRules",
        400,
        r#"{"__type":"InvalidRequestException","message":"bad token"}"#,
    );
    let p = start(&fake, fast_options());
    let r = one_shot(p.addr(), "POST", "/SamplingTargets", b"{}");
    assert_eq!((r.status, r.text().as_str()), (429, throttled));
    assert_eq!(r.header("x-amzn-errortype"), Some("ThrottledException"));
    let r = one_shot(
        p.addr(),
        "POST",
        "/GetSamplingRules",
        br#"{"NextToken":"x"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(json(&r.body)["message"], "bad token");
    assert_eq!(fake.seen().len(), 2);
}

#[test]
fn other_paths_and_methods_are_refused_unless_allowed() {
    let fake = FakeXray::start();
    let p = start(&fake, fast_options());
    let mut c = Client::connect(p.addr()).unwrap();
    let r = c
        .request("POST", "/TraceSegments", &json_headers(), b"{}")
        .unwrap();
    assert_eq!(r.status, 404);
    let msg = json(&r.body)["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("/TraceSegments")
            && msg.contains("--proxy-allow-all")
            && msg.contains("/GetSamplingRules"),
        "{msg}"
    );
    // The connection stays usable after a refusal.
    let r = c
        .request("GET", "/GetSamplingRules", &json_headers(), b"")
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = c
        .request("DELETE", "/metrics", &json_headers(), b"")
        .unwrap();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = c.request("POST", "/", &json_headers(), b"").unwrap();
    assert_eq!(r.status, 404);
    assert!(
        fake.seen().is_empty(),
        "nothing refused reaches X-Ray: {:?}",
        fake.seen()
    );

    let open = start(
        &fake,
        Options {
            allow_all: true,
            ..fast_options()
        },
    );
    let r = one_shot(
        open.addr(),
        "POST",
        "/TraceSegments",
        br#"{"TraceSegmentDocuments":["{}"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = one_shot(open.addr(), "PUT", "/TraceSegments", b"{}");
    assert_eq!(r.status, 405);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].signature.is_ok() && seen[0].path == "/TraceSegments");
    let e = scrape(p.addr());
    assert_eq!(e.proxy_requests("other", "404"), 2.0);
    assert_eq!(e.proxy_requests("/GetSamplingRules", "405"), 1.0);
    assert_eq!(e.proxy_requests("/metrics", "405"), 1.0);
}

#[test]
fn oversized_bodies_are_refused_and_never_forwarded() {
    let fake = FakeXray::start();
    let p = start(&fake, fast_options()); // max_body 4096
    // At the limit: forwarded.
    let at_limit = format!("{{\"NextToken\":\"{}\"}}", "a".repeat(4096 - 16));
    assert_eq!(at_limit.len(), 4096);
    let r = one_shot(p.addr(), "POST", "/GetSamplingRules", at_limit.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    // Over it, announced by Content-Length: 413 before the body is read, then close.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"POST /GetSamplingRules HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n")
        .unwrap();
    let text = read_all(&mut s, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(
        text.contains("Connection: close") && text.contains("4096 bytes"),
        "{text}"
    );
    // Over it, chunked.
    let mut c = Client::connect(p.addr()).unwrap();
    c.send_chunked(
        "POST",
        "/SamplingTargets",
        &json_headers(),
        &vec![b'x'; 5000],
        1000,
    )
    .unwrap();
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 413);
    // Over it with Expect: 100-continue: refused without waiting for the body.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"POST /SamplingTargets HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n").unwrap();
    let text = read_all(&mut s, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    // A chunked body within the limit is de-chunked and forwarded.
    let mut c = Client::connect(p.addr()).unwrap();
    c.send_chunked(
        "POST",
        "/SamplingTargets",
        &json_headers(),
        br#"{"SamplingStatisticsDocuments":[]}"#,
        7,
    )
    .unwrap();
    assert_eq!(c.read_response().unwrap().status, 200);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].body, br#"{"SamplingStatisticsDocuments":[]}"#);
    let e = scrape(p.addr());
    assert_eq!(e.proxy_requests("invalid", "413"), 3.0);
}

/// A chunked body of `small` one-byte chunks with 900-byte extensions, then one `large` chunk.
fn padded_chunked_request(small: usize, large: usize) -> Vec<u8> {
    let mut raw = b"POST /SamplingTargets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..small {
        raw.extend_from_slice(format!("1;pad={}\r\n \r\n", "e".repeat(900)).as_bytes());
    }
    raw.extend_from_slice(format!("{large:x}\r\n").as_bytes());
    raw.extend(std::iter::repeat_n(b' ', large));
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    raw
}

#[test]
fn chunk_framing_is_answered_or_refused_promptly_never_left_to_time_out() {
    let fake = FakeXray::start();
    let p = start(
        &fake,
        Options {
            max_body: 64 * 1024,
            read_timeout: Duration::from_secs(8),
            ..fast_options()
        },
    );
    // Decoded 60 KiB, under the limit, with 55 KiB of framing: forwarded.
    let ok = padded_chunked_request(60, 60 * 1024);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(&ok).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = read_all(&mut s, Duration::from_secs(6));
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert_eq!(fake.seen()[0].body.len(), 60 + 60 * 1024);
    // Decoded 60 KiB again, but 105 KiB of extensions: more framing than the port buffers
    // (its 160 KiB read cap). Refused with 413 at once, not after the 8 s read timeout.
    let big = padded_chunked_request(115, 60 * 1024);
    assert!(big.len() > xrayd::proxy::Limits::default().max_request());
    let t = Instant::now();
    let mut s = TcpStream::connect(p.addr()).unwrap();
    let writer = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            let _ = s.write_all(&big);
        }
    });
    let text = read_all(&mut s, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "answered after {:?}",
        t.elapsed()
    );
    let _ = writer.join();
    assert_eq!(fake.seen().len(), 1);
}

#[test]
fn requests_share_a_bounded_pool_and_small_calls_never_wait_for_it() {
    let fake = FakeXray::start();
    let p = start(
        &fake,
        Options {
            max_body: 64 * 1024,
            buffer_pool: 60 * 1024,
            read_timeout: Duration::from_secs(20),
            ..fast_options()
        },
    );
    // A client takes the whole pool with an unfinished 64 KB request (its buffer grows to
    // 64 KiB: 4 KiB of its own, 60 KiB from the pool).
    let mut hog = TcpStream::connect(p.addr()).unwrap();
    hog.write_all(b"POST /GetSamplingRules HTTP/1.1\r\nContent-Length: 64000\r\n\r\n")
        .unwrap();
    hog.write_all(&[b' '; 50_000]).unwrap();
    wait_until_read(p.addr());
    // A 20 KB request does not fit in what is left: 503 at once, never more memory.
    let twenty = format!("{{\"NextToken\":\"{}\"}}", "t".repeat(20_000));
    let r = one_shot(p.addr(), "POST", "/SamplingTargets", twenty.as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-amzn-errortype"), Some("ProxyBusy"));
    assert_eq!(r.header("connection"), Some("close"));
    // An SDK's usual call and a probe fit in their connection's own part.
    assert_eq!(
        one_shot(p.addr(), "POST", "/GetSamplingRules", b"{}").status,
        200
    );
    assert_eq!(one_shot(p.addr(), "GET", "/healthz", b"").status, 200);
    // Once the large request is done, the pool is back.
    hog.write_all(&[b' '; 14_000]).unwrap();
    let text = read_all(&mut hog, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let r = one_shot(p.addr(), "POST", "/SamplingTargets", twenty.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fake.seen().len(), 3);
}

/// Waits until the server has read everything sent to it.
fn wait_until_read(addr: SocketAddr) {
    support::poll_until(
        Duration::from_secs(10),
        || {
            format!(
                "bytes left unread: {:?}",
                support::daemon::server_side(addr.port())
            )
        },
        || (support::daemon::server_side(addr.port()).1 == 0).then_some(()),
    );
}

#[test]
fn browser_requests_are_refused_before_anything_is_signed() {
    let fake = FakeXray::start();
    let p = start(
        &fake,
        Options {
            allow_all: true,
            ..fast_options()
        },
    );
    let body = br#"{"TraceSegmentDocuments":["{}"]}"#;
    let refused: [&[(&str, &str)]; 5] = [
        &[
            ("Origin", "https://evil.example"),
            ("Content-Type", "application/json"),
        ],
        &[("Origin", "null")],
        &[("Content-Type", "text/plain;charset=UTF-8")],
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &[("Content-Type", "multipart/form-data; boundary=b")],
    ];
    for headers in refused {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for path in ["/TraceSegments", "/GetSamplingRules"] {
            let mut c = Client::connect(p.addr()).unwrap();
            let r = c.request("POST", path, &headers, body).unwrap();
            assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
            assert_eq!(r.header("x-amzn-errortype"), Some("BrowserRequestRefused"));
            let msg = json(&r.body)["message"].as_str().unwrap().to_string();
            assert!(msg.contains("web browsers"), "{msg}");
        }
    }
    // With Expect: 100-continue, refused without asking for the body.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"POST /TraceSegments HTTP/1.1\r\nOrigin: http://localhost:2000\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
    let text = read_all(&mut s, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 403 "), "{text}");
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
    // What SDKs send goes through: JSON with or without a charset, or no Content-Type.
    for ct in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        None,
    ] {
        let headers: Vec<(String, String)> = ct
            .map(|v| ("Content-Type".to_string(), v.to_string()))
            .into_iter()
            .collect();
        let mut c = Client::connect(p.addr()).unwrap();
        let r = c
            .request("POST", "/GetSamplingRules", &headers, b"{}")
            .unwrap();
        assert_eq!(r.status, 200, "{ct:?}: {}", r.text());
    }
    assert_eq!(fake.seen().len(), 3);
    // The operator endpoints do not care.
    let mut c = Client::connect(p.addr()).unwrap();
    let r = c
        .request(
            "GET",
            "/healthz",
            &[("Origin".into(), "https://x".into())],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn upstream_answers_keep_their_content_type() {
    let fake = FakeXray::start();
    let html = "<html><body><h1>404 Not Found</h1></body></html>";
    fake.answer_typed(
        "/GetSamplingRules",
        404,
        "text/html; charset=iso-8859-1",
        html,
    );
    let p = start(&fake, fast_options());
    let r = one_shot(p.addr(), "POST", "/GetSamplingRules", b"{}");
    assert_eq!((r.status, r.text().as_str()), (404, html));
    assert_eq!(
        r.header("content-type"),
        Some("text/html; charset=iso-8859-1")
    );
    let r = one_shot(p.addr(), "POST", "/SamplingTargets", b"{}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn expect_continue_pipelining_head_and_http10() {
    let fake = FakeXray::start();
    let p = start(&fake, fast_options());
    // Expect: 100-continue on a forwarded path: 100 first, then the answer.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /GetSamplingRules HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"{}").unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    // Three pipelined requests in one write, answered in order.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n\r\nPOST /GetSamplingRules HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}HEAD /readyz HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let text = read_all(&mut s, Duration::from_secs(5));
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "200"], "{text}");
    let rules = text.find("SamplingRuleRecords").unwrap();
    assert!(text.find("ok\n").unwrap() < rules, "{text}");
    assert!(
        text.ends_with("Connection: close\r\n\r\n"),
        "HEAD has no body: {text}"
    );
    // HTTP/1.0: closed after the answer unless keep-alive was asked for.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let text = read_all(&mut s, Duration::from_secs(5));
    assert!(
        text.starts_with("HTTP/1.1 200 ") && text.ends_with("\r\n\r\nok\n"),
        "{text}"
    );
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("Connection: keep-alive"));
    // Garbage: 400 and close.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
        .unwrap();
    let text = read_all(&mut s, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert_eq!(fake.seen_on("/GetSamplingRules").len(), 2);
}

#[test]
fn slow_clients_time_out_without_delaying_others() {
    let fake = FakeXray::start();
    let p = start(
        &fake,
        Options {
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3),
            ..fast_options()
        },
    );
    // A slowloris: a head that trickles in, one byte every 100 ms.
    let mut slow = TcpStream::connect(p.addr()).unwrap();
    let started = Instant::now();
    let trickle = std::thread::spawn({
        let mut s = slow.try_clone().unwrap();
        move || {
            for b in
                b"POST /GetSamplingRules HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaa"
            {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                // Pacing is the scenario: one byte every 100 ms.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    // A client that sends half a body and stops.
    let mut stalled = TcpStream::connect(p.addr()).unwrap();
    stalled
        .write_all(b"POST /SamplingTargets HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Sampl")
        .unwrap();
    // A client that connects and says nothing (idle): closed after the idle timeout.
    let mut idle = TcpStream::connect(p.addr()).unwrap();
    // Meanwhile a well-behaved client is served promptly, over and over.
    let mut c = Client::connect(p.addr()).unwrap();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(1600) {
        let t = Instant::now();
        let r = c
            .request("POST", "/GetSamplingRules", &json_headers(), b"{}")
            .unwrap();
        assert_eq!(r.status, 200);
        let r = c.request("GET", "/healthz", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        worst = worst.max(t.elapsed());
    }
    // Waiting behind a slow client would take its 1 s read timeout.
    assert!(
        worst < Duration::from_millis(900),
        "a good client waited {worst:?}"
    );
    let text = read_all(&mut stalled, Duration::from_secs(3));
    assert!(
        text.starts_with("HTTP/1.1 408 ") && text.contains("Connection: close"),
        "{text}"
    );
    let text = read_all(&mut slow, Duration::from_secs(3));
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    let slow_done = started.elapsed();
    assert!(
        slow_done < Duration::from_millis(3000),
        "slow client held {slow_done:?}"
    );
    let _ = trickle.join();
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)),
        "idle connection not closed"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "idle closed too early"
    );
    // The good client's keep-alive connection was used throughout; it is also closed once idle:
    // letting its 3 s idle timeout pass is the scenario.
    std::thread::sleep(Duration::from_millis(3600));
    assert!(
        c.request("GET", "/healthz", &[], b"").is_err(),
        "idle keep-alive connection should be closed"
    );
    assert!(fake.seen().iter().all(|s| s.signature.is_ok()));
    let e = scrape(p.addr());
    assert_eq!(e.proxy_requests("invalid", "408"), 2.0);
}

#[test]
fn upstream_down_is_502_and_slow_upstream_is_504() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = start_with(
        Some(upstream(
            &format!("http://{closed}"),
            test_creds(),
            Duration::from_secs(2),
        )),
        fast_options(),
        Arc::new(Stats::default()),
    );
    let r = one_shot(p.addr(), "POST", "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-amzn-errortype"), Some("UpstreamUnavailable"));
    let msg = json(&r.body)["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&closed.to_string()), "{msg}");
    // Healthz is unaffected.
    assert_eq!(one_shot(p.addr(), "GET", "/healthz", b"").status, 200);

    let fake = FakeXray::start();
    fake.set_delay(Duration::from_millis(1500));
    let slow = start_with(
        Some(upstream(
            &fake.endpoint(),
            test_creds(),
            Duration::from_millis(300),
        )),
        fast_options(),
        Arc::new(Stats::default()),
    );
    let t = Instant::now();
    let r = one_shot(slow.addr(), "POST", "/SamplingTargets", b"{}");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    let e = scrape(p.addr());
    assert_eq!(e.proxy_requests("/GetSamplingRules", "502"), 1.0);
}

/// Credentials that fail the way a container credentials endpoint does: quoting its answer.
struct EndpointFailure;

const ENDPOINT_ANSWER: &str =
    "<html>task role arn:aws:iam::123456789012:role/internal-only, node 10.1.2.3</html>";

impl ProvideCredentials for EndpointFailure {
    fn credentials(&self) -> Result<Credentials, CredentialsError> {
        Err(CredentialsError(format!(
            "container credentials endpoint answered 500: {ENDPOINT_ANSWER}"
        )))
    }
    fn source(&self) -> &str {
        "container"
    }
}

#[test]
fn no_credentials_is_503_and_nothing_is_forwarded_unsigned() {
    let fake = FakeXray::start();
    let p = start_with(
        Some(upstream(
            &fake.endpoint(),
            Arc::new(NoCredentials),
            Duration::from_secs(2),
        )),
        fast_options(),
        Arc::new(Stats::default()),
    );
    let r = one_shot(p.addr(), "POST", "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-amzn-errortype"), Some("CredentialsUnavailable"));
    let msg = json(&r.body)["message"].as_str().unwrap().to_string();
    assert!(msg.contains("no AWS credentials"), "{msg}");
    let r = one_shot(p.addr(), "GET", "/readyz", b"");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("no AWS credentials"), "{}", r.text());
    // Nothing reaches X-Ray: the absence is checked over a while, which is the scenario.
    std::thread::sleep(Duration::from_millis(100));
    assert!(fake.seen().is_empty());
    assert_eq!(fake.connections(), 0);
}

#[test]
fn why_credentials_are_missing_is_not_told_to_clients() {
    let fake = FakeXray::start();
    let p = start_with(
        Some(upstream(
            &fake.endpoint(),
            Arc::new(EndpointFailure),
            Duration::from_secs(2),
        )),
        fast_options(),
        Arc::new(Stats::default()),
    );
    let r = one_shot(p.addr(), "POST", "/SamplingTargets", b"{}");
    assert_eq!(r.status, 503);
    assert_eq!(
        json(&r.body)["message"],
        "xrayd has no AWS credentials to sign the request with, so it was not forwarded; see the daemon's log for why"
    );
    let r = one_shot(p.addr(), "GET", "/readyz", b"");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "not ready: no AWS credentials: see the daemon's log for why\n"
    );
    let r = one_shot(p.addr(), "GET", "/metrics", b"");
    assert!(!r.text().contains("internal-only"), "{}", r.text());
    assert!(fake.seen().is_empty());
}

#[test]
fn many_concurrent_keep_alive_clients() {
    let fake = FakeXray::start();
    let p = start(
        &fake,
        Options {
            read_timeout: Duration::from_secs(10),
            ..fast_options()
        },
    );
    let addr = p.addr();
    const CLIENTS: usize = 64;
    const EACH: usize = 10;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr).unwrap();
                for j in 0..EACH {
                    let body = format!("{{\"NextToken\":\"client-{i}-req-{j}\"}}");
                    let r = c
                        .request(
                            "POST",
                            "/GetSamplingRules",
                            &json_headers(),
                            body.as_bytes(),
                        )
                        .unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    let r = c.request("GET", "/healthz", &[], b"").unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let seen = fake.seen();
    assert_eq!(seen.len(), CLIENTS * EACH);
    assert!(seen.iter().all(|s| s.signature.is_ok()));
    let mut bodies: Vec<String> = seen
        .iter()
        .map(|s| String::from_utf8(s.body.clone()).unwrap())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), CLIENTS * EACH, "every body forwarded once");
    assert!(
        fake.connections() <= Options::default().workers,
        "upstream connections: {}",
        fake.connections()
    );
    let e = scrape(addr);
    assert_eq!(
        e.proxy_requests("/GetSamplingRules", "200"),
        (CLIENTS * EACH) as f64
    );
    assert_eq!(e.proxy_requests("/healthz", "200"), (CLIENTS * EACH) as f64);
}

#[test]
fn at_the_connection_limit_a_new_client_takes_the_longest_idle_ones_place() {
    let fake = FakeXray::start();
    let p = start(
        &fake,
        Options {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
            ..fast_options()
        },
    );
    let mut a = Client::connect(p.addr()).unwrap();
    let mut b = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(a.request("GET", "/healthz", &[], b"").unwrap().status, 200);
    // b is newer, and in the middle of a request.
    b.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    // A third client is served at once: the idle a makes room, not the busy b.
    let r = one_shot(p.addr(), "GET", "/healthz", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        a.request("GET", "/healthz", &[], b"").is_err(),
        "the longest-idle connection should have been closed"
    );
    b.write_all(b"Connection: close\r\n\r\n").unwrap();
    let text = read_all(&mut b, Duration::from_secs(3));
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");

    // Only connections waiting for X-Ray are never closed: with both slots waiting, a new
    // client is refused.
    fake.set_delay(Duration::from_millis(1500));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = p.addr();
            std::thread::spawn(move || one_shot(addr, "POST", "/GetSamplingRules", b"{}").status)
        })
        .collect();
    support::poll_until(
        Duration::from_secs(5),
        || "both calls never reached X-Ray".into(),
        || (fake.connections() >= 2).then_some(()),
    );
    let mut c = TcpStream::connect(p.addr()).unwrap();
    let text = read_all(&mut c, Duration::from_secs(3));
    assert!(
        text.starts_with("HTTP/1.1 503 ") && text.contains("too many open connections"),
        "{text}"
    );
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
}

#[test]
fn bind_failure_is_a_clear_error_and_ipv6_works() {
    quiet_log();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = Server::start(Config {
        bind: addr.clone(),
        options: Options::default(),
        upstream: None,
        stats: Arc::new(Stats::default()),
        budget_bytes: 1,
        local_sink: true,
    })
    .err()
    .expect("bind must fail");
    assert!(
        err.contains("Cannot listen on TCP") && err.contains(&addr) && err.contains("-t"),
        "{err}"
    );
    let bad = Server::start(Config {
        bind: "not an address".into(),
        options: Options::default(),
        upstream: None,
        stats: Arc::new(Stats::default()),
        budget_bytes: 1,
        local_sink: true,
    })
    .err()
    .expect("bad address");
    assert!(bad.contains("-t/--bind-tcp"), "{bad}");

    if std::net::TcpListener::bind("[::1]:0").is_err() {
        support::skip(
            "bind_failure_is_a_clear_error_and_ipv6_works",
            "(IPv6 part) no IPv6 loopback here",
        );
        return;
    }
    let stats = Arc::new(Stats::default());
    stats.ingest_running.store(true, Relaxed);
    let v6 = Server::start(Config {
        bind: "[::1]:0".into(),
        options: Options::default(),
        upstream: None,
        stats,
        budget_bytes: 1,
        local_sink: true,
    })
    .unwrap();
    assert!(v6.local_addr().is_ipv6());
    assert_eq!(one_shot(v6.local_addr(), "GET", "/readyz", b"").status, 200);
    // Local sink: sampling calls have nowhere to go.
    let r = one_shot(v6.local_addr(), "POST", "/GetSamplingRules", b"{}");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("--local-sink"), "{}", r.text());
}

#[test]
fn readyz_follows_the_upload_pipeline() {
    use xrayd::log::Throttle;
    use xrayd::queue;
    use xrayd::segment::Segment;
    use xrayd::upload::Uploader;
    use xrayd::upload::backlog::Backlog;
    use xrayd::upload::retry::Backoff;
    use xrayd::upload::sink::XraySink;
    use xrayd::xray::client::XrayClient;

    quiet_log();
    let fake = FakeXray::start();
    let stats = Arc::new(Stats::default());
    let backlog = Arc::new(Backlog::new());
    let (writer, reader) = queue::bounded(1024, 8 << 20, stats.clone(), backlog.clone());
    {
        let backlog = backlog.clone();
        std::thread::spawn(move || {
            xrayd::batch::run(reader, |b| backlog.push_fresh(b));
            backlog.close();
        });
    }
    let uploader = Uploader {
        backlog: backlog.clone(),
        sink: Arc::new(XraySink {
            client: XrayClient::new(&client_config(&fake.endpoint()), test_creds()).unwrap(),
        }),
        stats: stats.clone(),
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
        },
        failures_logged: Arc::new(Throttle::new(Duration::from_secs(60))),
    };
    std::thread::spawn(move || uploader.run(1));
    let p = start_with(
        Some(upstream(
            &fake.endpoint(),
            test_creds(),
            Duration::from_secs(2),
        )),
        fast_options(), // threshold 1 s
        stats.clone(),
    );
    let ready = |addr| {
        let r = one_shot(addr, "GET", "/readyz", b"");
        (r.status, r.text())
    };
    assert_eq!(ready(p.addr()).0, 200);
    // Not ready while ingest is not running.
    stats.ingest_running.store(false, Relaxed);
    let (status, text) = ready(p.addr());
    assert!(
        status == 503 && text.contains("UDP ingest is not running"),
        "{text}"
    );
    stats.ingest_running.store(true, Relaxed);

    fake.fail_segments(true);
    for i in 0..5 {
        writer.push(Segment::new(support::make_segment(i, 300).as_bytes()));
    }
    assert!(fake.wait(Duration::from_secs(5), |s| {
        s.iter()
            .any(|r| r.path == "/TraceSegments" && r.status == Some(500))
    }));
    let failing_since = Instant::now();
    // Failing, but not for longer than the threshold yet.
    assert_eq!(ready(p.addr()).0, 200);
    let (after, text) = support::poll(Duration::from_secs(5), || {
        let (status, text) = ready(p.addr());
        (status == 503).then(|| (failing_since.elapsed(), text))
    })
    .expect("readyz never flipped");
    // Not at once: the threshold is 1 s, counted from the daemon reading the 500, which this
    // thread sees a little later.
    assert!(
        after >= Duration::from_millis(500),
        "flipped after {after:?}"
    );
    assert!(
        text.contains("uploads to X-Ray have been failing"),
        "{text}"
    );
    let e = scrape(p.addr());
    assert_eq!(e.value("xrayd_ready", &[]), 0.0);
    assert!(e.value("xrayd_upload_failing_seconds", &[]) >= 1.0);
    assert!(e.value("xrayd_upload_retries_total", &[]) >= 1.0);
    assert!(e.value("xrayd_upload_errors_total", &[("class", "http_5xx")]) >= 1.0);

    // X-Ray recovers: the retried batch goes through and readiness comes back.
    fake.fail_segments(false);
    assert!(
        fake.wait_documents(5, Duration::from_secs(5)),
        "retried batch not delivered"
    );
    support::poll_until(
        Duration::from_secs(5),
        || "readyz did not recover".into(),
        || (ready(p.addr()).0 == 200).then_some(()),
    );
    // X-Ray saw the documents before answering: the daemon counts them once the answer is in.
    let e = support::poll_until(
        Duration::from_secs(5),
        || "the delivered batch was not counted".into(),
        || Some(scrape(p.addr())).filter(|e| e.value("xrayd_segments_sent_total", &[]) == 5.0),
    );
    assert_eq!(e.value("xrayd_ready", &[]), 1.0);
    assert_eq!(e.value("xrayd_upload_failing_seconds", &[]), 0.0);
    assert!(e.value("xrayd_upload_duration_seconds_count", &[]) >= 2.0);
    assert_eq!(e.value("xrayd_batches_in_flight", &[]), 0.0);
}

#[test]
fn health_subcommand_probes_healthz_and_readyz() {
    let fake = FakeXray::start();
    let p = start(&fake, fast_options());
    let addr = p.addr().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(xrayd::health::main(args(&["health", "--tcp", &addr])), 0);
    assert_eq!(xrayd::health::main(args(&["--tcp", &addr, "--ready"])), 0);
    p.stats.ingest_running.store(false, Relaxed);
    assert_eq!(xrayd::health::main(args(&["--tcp", &addr, "--ready"])), 1);
    assert_eq!(
        xrayd::health::main(args(&["--tcp", &addr])),
        0,
        "alive even when not ready"
    );
    // 0.0.0.0 is probed on loopback.
    let any = format!("0.0.0.0:{}", p.addr().port());
    assert_eq!(xrayd::health::main(args(&["--tcp", &any])), 0);
    p.server.stop();
    assert_eq!(
        xrayd::health::main(args(&["--tcp", &addr, "--timeout", "1s"])),
        1
    );
    // Something that is not xrayd (a silent listener) fails within the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    assert_eq!(
        xrayd::health::main(args(&[
            "--tcp",
            &silent.local_addr().unwrap().to_string(),
            "--timeout",
            "500ms"
        ])),
        1
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

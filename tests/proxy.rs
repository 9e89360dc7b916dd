//! The TCP port of the real xrayd process: the real Python X-Ray SDK's centralized sampling
//! through xrayd to a fake X-Ray that verifies signatures, and the start-up wiring (log lines,
//! bind failure, no credentials, upstream down).

mod proxy_support;
#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use proxy_support::{FakeSampling, one_shot, spawn, tcp_addr};
use support::{Daemon, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY, secs};
use xrayd::proxy::routes::SAMPLING_PATHS;

/// Rules: the blocked service gets fixed rate 0 and reservoir 0; everything else is sampled.
const RULES: &str = r#"{"SamplingRuleRecords":[
 {"SamplingRule":{"RuleName":"block-blocked-svc","RuleARN":"arn:aws:xray:us-east-1:123456789012:sampling-rule/block","ResourceARN":"*","Priority":1,"FixedRate":0.0,"ReservoirSize":0,"ServiceName":"blocked-svc","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","Version":1,"Attributes":{}},"CreatedAt":1700000000,"ModifiedAt":1700000000},
 {"SamplingRule":{"RuleName":"Default","RuleARN":"arn:aws:xray:us-east-1:123456789012:sampling-rule/Default","ResourceARN":"*","Priority":10000,"FixedRate":1.0,"ReservoirSize":0,"ServiceName":"*","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","Version":1,"Attributes":{}},"CreatedAt":1700000000,"ModifiedAt":1700000000}]}"#;

fn python_sdk_available() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import aws_xray_sdk, botocore"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 cannot import aws_xray_sdk: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("python3 not found: {e}")),
    }
}

#[test]
fn python_sdk_fetches_rules_and_reports_targets_through_xrayd() {
    if let Err(why) = python_sdk_available() {
        if std::env::var("XRAYD_REQUIRE_E2E").as_deref() == Ok("1") {
            panic!("XRAYD_REQUIRE_E2E=1 but {why}");
        }
        println!("SKIPPED: {why}");
        return;
    }
    let fake = FakeSampling::start();
    fake.answer("/GetSamplingRules", 200, &RULES.replace('\n', ""));
    let d = spawn(&fake.endpoint(), &["-l", "debug"], true);
    let udp = d.udp_addr();
    let tcp = tcp_addr(&d);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/proxy_support/sdk_sampling.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .env("AWS_XRAY_DAEMON_ADDRESS", format!("udp:{udp} tcp:{tcp}"))
        // The SDK must not find credentials of its own: it calls the daemon unsigned.
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(v["sampler"], "DefaultSampler", "{v}");
    assert_eq!(v["rules_loaded"], true, "{v}\n{stderr}");
    assert_eq!(
        v["rules"],
        serde_json::json!(["Default", "block-blocked-svc"]),
        "{v}"
    );
    assert_eq!(
        v["blocked_sampled"], 0,
        "fixed rate 0 / reservoir 0 stops sampling: {v}"
    );
    assert_eq!(v["open_sampled_before_targets"], 50, "{v}");
    assert_eq!(v["targets_applied"], true, "{v}\n{stderr}");
    assert_eq!(
        v["open_sampled_after_targets"], 0,
        "target rate 0 applied: {v}"
    );

    // Every sampling call arrived signed by xrayd, with the SDK's body untouched.
    let rules = fake.seen_on("/GetSamplingRules");
    let targets = fake.seen_on("/SamplingTargets");
    assert!(
        !rules.is_empty() && !targets.is_empty(),
        "{:?}",
        fake.seen()
    );
    for s in rules.iter().chain(&targets) {
        assert!(s.signature.is_ok(), "{} {:?}", s.path, s.signature);
        assert!(
            s.header("authorization")
                .unwrap()
                .contains("/us-east-1/xray/aws4_request")
        );
        assert_eq!(s.header("x-amz-target"), None);
    }
    assert_eq!(
        rules[0].body, b"{}",
        "GetSamplingRules body as the SDK sent it"
    );
    let report: serde_json::Value = serde_json::from_slice(&targets[0].body).unwrap();
    let docs = report["SamplingStatisticsDocuments"].as_array().unwrap();
    let names: Vec<&str> = docs.iter().filter_map(|d| d["RuleName"].as_str()).collect();
    assert!(
        names.contains(&"Default") && names.contains(&"block-blocked-svc"),
        "{report}"
    );
    let default = docs.iter().find(|d| d["RuleName"] == "Default").unwrap();
    assert!(default["RequestCount"].as_u64().unwrap() >= 52, "{report}");
    assert!(
        default["ClientID"].as_str().is_some_and(|c| c.len() == 24),
        "{report}"
    );

    // Only the open service's segments were sampled, sent over UDP and uploaded.
    assert!(
        fake.wait_documents(2, secs(10)),
        "segments not uploaded: {:?}",
        fake.documents()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let names: Vec<String> = fake
        .documents()
        .iter()
        .map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["open-svc", "open-svc"], "{names:?}");
    assert!(
        fake.seen_on("/TraceSegments")
            .iter()
            .all(|s| s.signature.is_ok())
    );

    let metrics = proxy_support::scrape(tcp);
    assert_eq!(
        metrics.proxy_requests("/GetSamplingRules", "200"),
        rules.len() as f64
    );
    assert!(metrics.proxy_requests("/SamplingTargets", "200") >= 1.0);
}

#[test]
fn daemon_serves_the_tcp_port_and_logs_its_address() {
    let fake = FakeSampling::start();
    let d = spawn(&fake.endpoint(), &[], true);
    let tcp = tcp_addr(&d);
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
    let fake = FakeSampling::start();
    let d = spawn(&fake.endpoint(), &[], false);
    let tcp = tcp_addr(&d);
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
    std::thread::sleep(Duration::from_millis(200));
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

#[test]
fn upstream_down_gives_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = spawn(&format!("http://{closed}"), &[], true);
    let tcp = tcp_addr(&d);
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
    let fake = FakeSampling::start();
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
    let d = spawn(&fake.endpoint(), &[], true);
    let tcp = tcp_addr(&d);
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

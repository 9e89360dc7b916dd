//! End to end: segments emitted by the real Python X-Ray SDK go through the real `xrayd` binary
//! into a `moto_server` that verifies SigV4 signatures, and come back byte for byte through
//! BatchGetTraces.
//!
//! Moving parts (all on loopback, each test has its own moto and xrayd):
//! - `moto_server -H 127.0.0.1 -p PORT` started with `INITIAL_NO_AUTH_ACTION_COUNT=3`: moto lets
//!   the first 3 service actions through unchecked (they create an IAM user, its `xray:*` inline
//!   policy and an access key: `tests/e2e/moto_setup.py`), then checks the signature and the IAM
//!   policy of every request (403 `SignatureDoesNotMatch` for a wrong secret).
//! - `tests/e2e/emit_segments.py` drives `aws_xray_sdk`'s recorder at xrayd's UDP port and records
//!   the exact bytes of every datagram; `tests/e2e/get_traces.py` reads the traces back.
//!
//! Prerequisites: `python3` with boto3, moto (`moto_server` on PATH) and aws_xray_sdk. When one
//! is missing the tests print `SKIPPED: <why>` and pass, unless `XRAYD_REQUIRE_E2E=1` is set (CI),
//! in which case they fail with that reason. Every wait is bounded; children are killed on drop.

mod e2e_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_support::{
    Creds, Moto, REGION, excerpt, first_difference, get_traces, moto_setup, run_script, start_moto,
};
use serde_json::Value;
use xrayd_kit::{self as support, TempDir};

const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(15);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Skip policy

/// True if the test should run; prints `SKIPPED` (or panics under `XRAYD_REQUIRE_E2E=1`).
fn e2e_enabled(test: &str) -> bool {
    e2e_support::e2e_enabled(test, &["boto3", "moto", "aws_xray_sdk"])
}

// ---------------------------------------------------------------------------------------------
// moto

/// PutTraceSegments signed here (aws-sigv4) and sent over a plain TCP connection.
/// Returns the HTTP status and the response body.
fn signed_put_trace_segments(port: u16, creds: &Creds, docs: &[&str]) -> (u16, String) {
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    let body = serde_json::json!({ "TraceSegmentDocuments": docs }).to_string();
    let host = format!("127.0.0.1:{port}");
    let url = format!("http://{host}/TraceSegments");
    let now = SystemTime::now();
    let ts = now.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let xray_ts = format!("{ts:.9}");
    let identity = Credentials::new(&creds.key_id, &creds.secret, None, None, "moto-e2e").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("xray")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
        ("x-amzn-xray-timestamp", xray_ts.as_str()),
    ];
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();

    let mut request = String::from("POST /TraceSegments HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    for (name, value) in instructions.headers() {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to moto");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable HTTP response from moto: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Proves that moto really verifies signatures: the same request is refused with a wrong secret
/// and accepted with the right one.
fn assert_signature_verification_on(moto: &Moto, creds: &Creds) {
    let trace_id = format!(
        "1-{:08x}-{:024x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        0xe2e_u64
    );
    let doc = format!(
        r#"{{"name":"sigcheck","id":"00000000000e2e01","trace_id":"{trace_id}","start_time":1,"end_time":2}}"#
    );
    let wrong = Creds {
        key_id: creds.key_id.clone(),
        secret: format!("{}x", creds.secret),
    };
    let (status, body) = signed_put_trace_segments(moto.port, &wrong, &[&doc]);
    assert_eq!(
        status, 403,
        "moto accepted a wrong secret (is signature verification on?): {body}"
    );
    assert!(
        body.contains("SignatureDoesNotMatch"),
        "wrong secret: expected SignatureDoesNotMatch, got: {body}"
    );
    let (status, body) = signed_put_trace_segments(moto.port, creds, &[&doc]);
    assert_eq!(
        status, 200,
        "moto refused a correctly signed request: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// xrayd

/// xrayd (or, as for every test of the kit, the executable `XRAYD_TEST_BIN` names: a stand-in
/// checks this harness itself) and the UDP address it reported.
struct Daemon {
    proc: support::Daemon,
    udp: String,
}

fn start_xrayd(moto: &Moto, creds: &Creds) -> Daemon {
    // A fresh scratch directory: no ./cfg.yaml is auto-found.
    let proc = support::Daemon::for_endpoint_with(
        &moto.endpoint(),
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", &creds.key_id),
            ("AWS_SECRET_ACCESS_KEY", &creds.secret),
        ],
    );
    let udp = proc.wait_map(DAEMON_START_TIMEOUT, |lines| {
        lines.iter().find_map(|l| {
            l.split_once("Listening for segments on UDP ")
                .map(|(_, addr)| addr.trim().to_string())
        })
    });
    let Some(udp) = udp else {
        let mut proc = proc;
        let status = proc.exited();
        panic!(
            "xrayd did not report `Listening for segments on UDP <addr>` within \
             {DAEMON_START_TIMEOUT:?} (exit status: {status:?})\n{}",
            proc.log_tail(50)
        );
    };
    assert!(
        udp.parse::<SocketAddr>().is_ok(),
        "xrayd reported an unparsable UDP address {udp:?}"
    );
    Daemon { proc, udp }
}

/// Sum of N over `Successfully sent batch of N segments` lines, and the partial-batch lines.
fn sent_segments(lines: &[String]) -> (usize, Vec<String>) {
    let mut sent = 0;
    let mut partial = Vec::new();
    for line in lines {
        if let Some((_, rest)) = line.split_once("Successfully sent batch of ") {
            sent += leading_number(rest);
        } else if let Some((_, rest)) = line.split_once("Sent batch of ")
            && rest.contains("Unprocessed")
        {
            partial.push(line.clone());
        }
    }
    (sent, partial)
}

fn leading_number(s: &str) -> usize {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// True if `line` mentions HTTP 403 or one of moto's auth failure codes. A bare `403` counts only
/// as a whole number (not inside `0.403` seconds, ids or timestamps).
fn mentions_auth_failure(line: &str) -> bool {
    if [
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "AccessDenied",
        "Forbidden",
        "FORBIDDEN",
    ]
    .iter()
    .any(|m| line.contains(m))
    {
        return true;
    }
    let bytes = line.as_bytes();
    line.match_indices("403").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + 3).copied();
        let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_';
        !before.is_some_and(word_char) && !after.is_some_and(word_char)
    })
}

// ---------------------------------------------------------------------------------------------
// Python scripts

#[derive(Debug)]
struct Record {
    trace_id: String,
    id: String,
    source: String,
    body: String,
}

fn emit_segments(
    daemon_udp: &str,
    out: &Path,
    traces: u32,
    extra: &[&str],
    cwd: &Path,
) -> Vec<Record> {
    let out_s = out.to_str().unwrap();
    let traces_s = traces.to_string();
    let mut args = vec!["--out", out_s, "--traces", traces_s.as_str()];
    args.extend_from_slice(extra);
    let run = run_script(
        "emit_segments.py",
        &args,
        &[("AWS_XRAY_DAEMON_ADDRESS", daemon_udp)],
        cwd,
    );
    run.success("emit_segments.py");
    let text = std::fs::read_to_string(out).expect("records file");
    let v: Value = serde_json::from_str(&text).expect("records file is JSON");
    let records: Vec<Record> = v
        .as_array()
        .expect("records file holds a list")
        .iter()
        .map(|r| Record {
            trace_id: r["trace_id"].as_str().unwrap().to_string(),
            id: r["id"].as_str().unwrap().to_string(),
            source: r["source"].as_str().unwrap_or("?").to_string(),
            body: r["body"].as_str().unwrap().to_string(),
        })
        .collect();
    assert!(!records.is_empty(), "emit_segments.py recorded nothing");
    records
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn sdk_segments_reach_signature_verifying_moto_byte_for_byte() {
    if !e2e_enabled("sdk_segments_reach_signature_verifying_moto_byte_for_byte") {
        return;
    }
    let tmp = TempDir::new("ok");
    let moto = start_moto(&tmp.0);
    let creds = moto_setup(&moto, &tmp.0);
    assert_signature_verification_on(&moto, &creds);

    let mut daemon = start_xrayd(&moto, &creds);
    let records_file = tmp.0.join("records.json");
    // 20 SDK traces (a third of them large and streamed) plus hand-written datagrams: more than
    // 50 documents, so at least two PutTraceSegments batches.
    let records = emit_segments(&daemon.udp, &records_file, 20, &[], &tmp.0);
    let expected = records.len();
    assert!(
        expected > 50,
        "expected more than 50 datagrams, got {expected}"
    );

    let outcome = daemon.proc.wait_map(UPLOAD_TIMEOUT, |lines| {
        let (sent, partial) = sent_segments(lines);
        (sent >= expected || !partial.is_empty()).then_some((sent, partial))
    });
    let still_running = daemon.proc.exited().is_none();
    let status = daemon.proc.terminate(SHUTDOWN_TIMEOUT);
    let log = daemon.proc.lines();
    let tail = daemon.proc.log_tail(60);
    let (sent, partial) = sent_segments(&log);
    assert!(
        still_running,
        "xrayd exited before SIGTERM (status {status:?})\n{tail}"
    );
    assert!(
        partial.is_empty(),
        "xrayd reported unprocessed segments: {partial:?}\n{tail}"
    );
    assert!(
        outcome.is_some(),
        "xrayd logged only {sent} of {expected} segments as sent within {UPLOAD_TIMEOUT:?}\n{tail}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "xrayd did not exit 0 within {SHUTDOWN_TIMEOUT:?} of SIGTERM: {status:?}\n{tail}"
    );
    assert!(
        log.iter().any(|l| l.contains("Got shutdown signal")),
        "xrayd did not log `Got shutdown signal`\n{tail}"
    );
    let auth_failures: Vec<&String> = log.iter().filter(|l| mentions_auth_failure(l)).collect();
    assert!(
        auth_failures.is_empty(),
        "xrayd log mentions 403/auth failures: {auth_failures:#?}"
    );
    let errors: Vec<&String> = log.iter().filter(|l| l.contains("[Error]")).collect();
    assert!(errors.is_empty(), "xrayd logged errors: {errors:#?}");
    assert_eq!(
        sent, expected,
        "xrayd's `Successfully sent batch` lines add up to {sent}, {expected} datagrams were sent\n{tail}"
    );

    let fetched = get_traces(&moto, &creds, &records_file, &tmp.0);
    assert!(
        fetched.unprocessed.is_empty(),
        "BatchGetTraces did not find traces {:?}",
        fetched.unprocessed
    );

    // Every recorded body must come back as a Document, byte for byte (as a string).
    let mut by_id: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for (trace, id, doc) in &fetched.segments {
        by_id
            .entry((trace.as_str(), id.as_str()))
            .or_default()
            .push(doc);
    }
    let mut problems = Vec::new();
    for r in &records {
        let key = (r.trace_id.as_str(), r.id.as_str());
        match by_id.get_mut(&key) {
            None => problems.push(format!(
                "{} segment {}/{} not returned by BatchGetTraces",
                r.source, r.trace_id, r.id
            )),
            Some(docs) => match docs.iter().position(|d| *d == r.body) {
                Some(i) => {
                    docs.swap_remove(i);
                }
                None => {
                    // Report the mismatch once, not again as an unexpected document.
                    let d = if docs.is_empty() {
                        ""
                    } else {
                        docs.swap_remove(0)
                    };
                    let at = first_difference(&r.body, d);
                    problems.push(format!(
                        "{} segment {}/{} differs at byte {at} (sent {} bytes, got {}): sent {} got {}",
                        r.source,
                        r.trace_id,
                        r.id,
                        r.body.len(),
                        d.len(),
                        excerpt(&r.body, at),
                        excerpt(d, at)
                    ));
                }
            },
        }
    }
    for ((trace, id), docs) in &by_id {
        for d in docs {
            problems.push(format!(
                "unexpected document {trace}/{id} returned ({} bytes): {}",
                d.len(),
                excerpt(d, 0)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) comparing {expected} sent bodies with {} returned documents:\n{}",
        problems.len(),
        fetched.segments.len(),
        problems.join("\n")
    );
    assert_eq!(fetched.segments.len(), expected);
}

#[test]
fn wrong_secret_is_refused_by_moto_and_xrayd_keeps_running() {
    if !e2e_enabled("wrong_secret_is_refused_by_moto_and_xrayd_keeps_running") {
        return;
    }
    let tmp = TempDir::new("bad");
    let moto = start_moto(&tmp.0);
    let creds = moto_setup(&moto, &tmp.0);
    let wrong = Creds {
        key_id: creds.key_id.clone(),
        secret: format!("{}-wrong", creds.secret),
    };

    let mut daemon = start_xrayd(&moto, &wrong);
    let records_file = tmp.0.join("records.json");
    let records = emit_segments(&daemon.udp, &records_file, 3, &[], &tmp.0);

    let failure = daemon.proc.wait_map(UPLOAD_TIMEOUT, |lines| {
        lines.iter().find(|l| mentions_auth_failure(l)).cloned()
    });
    let tail = daemon.proc.log_tail(60);
    assert!(
        failure.is_some(),
        "xrayd did not log the 403 from moto within {UPLOAD_TIMEOUT:?}\n{tail}"
    );
    assert!(
        daemon.proc.exited().is_none(),
        "xrayd exited after an upload failure\n{tail}"
    );

    // It keeps taking datagrams after the failure.
    let more_file = tmp.0.join("records-more.json");
    let more = emit_segments(&daemon.udp, &more_file, 1, &["--no-raw"], &tmp.0);
    // Staying up while time passes is the scenario: the daemon must not exit meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let tail = daemon.proc.log_tail(60);
    assert!(
        daemon.proc.exited().is_none(),
        "xrayd exited after more datagrams\n{tail}"
    );

    let status = daemon.proc.terminate(SHUTDOWN_TIMEOUT);
    let log = daemon.proc.lines();
    let tail = daemon.proc.log_tail(60);
    assert!(
        status.is_some_and(|s| s.success()),
        "xrayd did not exit 0 within {SHUTDOWN_TIMEOUT:?} of SIGTERM: {status:?}\n{tail}"
    );
    let (sent, _) = sent_segments(&log);
    assert_eq!(
        sent, 0,
        "xrayd claims segments were sent with a wrong secret\n{tail}"
    );

    for (file, recs) in [(&records_file, &records), (&more_file, &more)] {
        let fetched = get_traces(&moto, &creds, file, &tmp.0);
        assert!(
            fetched.segments.is_empty(),
            "moto stored {} document(s) sent with a wrong secret",
            fetched.segments.len()
        );
        let mut wanted: Vec<&str> = recs.iter().map(|r| r.trace_id.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut unprocessed: Vec<&str> = fetched.unprocessed.iter().map(String::as_str).collect();
        unprocessed.sort_unstable();
        assert_eq!(
            unprocessed, wanted,
            "every trace id must be unknown to moto"
        );
    }
}

#[test]
fn auth_failure_detection_ignores_numbers_that_merely_contain_403() {
    assert!(mentions_auth_failure("[Error] upload failed: HTTP 403"));
    assert!(mentions_auth_failure("status=403 body=..."));
    assert!(mentions_auth_failure("<Code>SignatureDoesNotMatch</Code>"));
    assert!(!mentions_auth_failure(
        "Successfully sent batch of 50 segments (0.403 seconds)"
    ));
    assert!(!mentions_auth_failure("trace 1-6b08092d-403abc"));
    assert!(!mentions_auth_failure("2026-11-26T10:24:03+00:00 [Info] x"));
}

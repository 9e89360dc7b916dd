//! Conformance with the real X-Ray SDKs: the Python SDK (aws-xray-sdk 2.15.0) and the Node SDK
//! (aws-xray-sdk-core 3.12.0, pinned in `tests/node/package.json` and its lockfile).
//!
//! Segments: each SDK emits the same corpus (`tests/e2e/sdk_corpus.py`, `tests/node/emit.js`:
//! unicode, lone surrogate escapes, control characters, ~60 KB metadata, annotations of every
//! type, streamed subsegments, an exception with its stack trace, metadata nested 1,100 levels,
//! big numbers, non-finite numbers, `1e400`) through its own UDP emitter to a capture relay of
//! this test, which records every datagram byte for byte and forwards it to the real `xrayd`.
//! xrayd uploads to a signature-verifying `moto_server`; every document is read back with
//! BatchGetTraces and must equal the body of its datagram (all after the first `\n`), byte for
//! byte, exactly once. The only documents that may be missing are those that are not JSON (the
//! Python SDK writes `float("inf")` as `Infinity`): xrayd must reject them, counted as bad JSON.
//!
//! Sampling: each SDK's centralized sampling goes through xrayd's TCP port to the fake X-Ray of
//! the kit's fake X-Ray, which verifies xrayd's SigV4 signatures: the SDK gets the rules, a rule
//! with fixed rate 0 and reservoir 0 stops sampling for its service (no segment of it arrives),
//! and the SDK's statistics reach SamplingTargets, naming the rules.
//!
//! Prerequisites as for `moto_e2e` (python3 with boto3, moto, aws_xray_sdk; `moto_server`), and
//! for the Node tests `node` with `npm ci --prefix tests/node` done. Missing ones make a test
//! print `SKIPPED: <test>: <why>` and pass, unless `XRAYD_REQUIRE_E2E=1` (CI).

mod e2e_support;
use xrayd_kit as support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use e2e_support::{
    Creds, ScriptOutput, excerpt, first_difference, get_traces, moto_setup, run_node, run_script,
    start_moto,
};
use support::{Daemon, FakeXray, TempDir, assert_conserved, poll_until, run_or_skip, secs};

const PYTHON_MODULES: &[&str] = &["boto3", "moto", "aws_xray_sdk"];
/// Every (sub)segment name of the corpus starts with this, then the case name.
const CASE_PREFIX: &str = "xrayd-conformance ";
/// The cases both corpus scripts emit.
const CASES: [&str; 11] = [
    "unicode",
    "lone-surrogate",
    "control",
    "big-metadata",
    "annotations",
    "streamed",
    "exception",
    "deep",
    "big-numbers",
    "nonfinite",
    "huge-exponent",
];
/// `GetSamplingRules` answer: the service `blocked-svc` gets fixed rate 0 and reservoir 0;
/// everything else is sampled (rate 1). Newlines are not part of the answer.
const BLOCKING_RULES: &str = r#"{"SamplingRuleRecords":[
 {"SamplingRule":{"RuleName":"block-blocked-svc","RuleARN":"arn:aws:xray:us-east-1:123456789012:sampling-rule/block","ResourceARN":"*","Priority":1,"FixedRate":0.0,"ReservoirSize":0,"ServiceName":"blocked-svc","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","Version":1,"Attributes":{}},"CreatedAt":1700000000,"ModifiedAt":1700000000},
 {"SamplingRule":{"RuleName":"Default","RuleARN":"arn:aws:xray:us-east-1:123456789012:sampling-rule/Default","ResourceARN":"*","Priority":10000,"FixedRate":1.0,"ReservoirSize":0,"ServiceName":"*","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","Version":1,"Attributes":{}},"CreatedAt":1700000000,"ModifiedAt":1700000000}]}"#;
/// Nesting depth of the `deep` case.
const DEPTH: usize = 1100;
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Capture relay

/// A UDP relay between an SDK and xrayd: records every datagram, then forwards it unchanged.
struct CaptureRelay {
    addr: SocketAddr,
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CaptureRelay {
    fn start(to: SocketAddr) -> CaptureRelay {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the capture relay");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (datagrams.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                sock.send_to(&buf[..n], to).expect("forward to xrayd");
                d.lock().unwrap().push(buf[..n].to_vec());
            }
        });
        CaptureRelay {
            addr,
            datagrams,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.datagrams.lock().unwrap().len()
    }

    fn datagrams(&self) -> Vec<Vec<u8>> {
        self.datagrams.lock().unwrap().clone()
    }
}

impl Drop for CaptureRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// One captured document: its case and the exact body bytes.
struct Captured {
    case: String,
    body: Vec<u8>,
}

/// The case named after [`CASE_PREFIX`] in `body` (up to the next space or quote).
fn case_of(body: &[u8]) -> Option<String> {
    let prefix = CASE_PREFIX.as_bytes();
    let at = body.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let rest = &body[at..];
    let end = rest.iter().position(|b| *b == b' ' || *b == b'"')?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

fn contains(body: &[u8], needle: &str) -> bool {
    body.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Number of `\uD800`-`\uDBFF` escapes not followed by a `\uDC00`-`\uDFFF` escape, and of
/// `\uDC00`-`\uDFFF` escapes not preceded by a high one: lone surrogates, as JSON text.
fn lone_surrogate_escapes(body: &[u8]) -> usize {
    let unit = |at: usize| -> Option<u16> {
        let esc = body.get(at..at + 6)?;
        if &esc[..2] != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&esc[2..]).ok()?, 16).ok()
    };
    let (mut lone, mut i, mut after_backslash) = (0, 0, false);
    while i < body.len() {
        if body[i] == b'\\' && !after_backslash {
            match unit(i) {
                Some(0xD800..=0xDBFF) if matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) => i += 12,
                Some(0xD800..=0xDFFF) => {
                    lone += 1;
                    i += 6;
                }
                _ => {
                    after_backslash = true;
                    i += 1;
                }
            }
            continue;
        }
        after_backslash = false;
        i += 1;
    }
    lone
}

/// What each case must hold, so that the corpus really carries what it is named after.
fn corpus_problems(sdk: &str, docs: &[Captured]) -> Vec<String> {
    let mut problems = Vec::new();
    for case in CASES {
        let of: Vec<&Captured> = docs.iter().filter(|d| d.case == case).collect();
        let n = of.len();
        let ok = match case {
            "lone-surrogate" => of.iter().any(|d| lone_surrogate_escapes(&d.body) >= 2),
            "control" => of
                .iter()
                .any(|d| contains(&d.body, "\\u0000") && contains(&d.body, "\\u001f")),
            "big-metadata" => of
                .iter()
                .any(|d| (60_000..64 * 1024).contains(&d.body.len())),
            "annotations" => of.iter().any(|d| {
                ["true", "false", "42", "-7", "\"text\""]
                    .iter()
                    .all(|v| contains(&d.body, v))
            }),
            "streamed" => {
                of.iter()
                    .filter(|d| contains(&d.body, "subsegment"))
                    .count()
                    >= 6
            }
            "exception" => of.iter().any(|d| {
                contains(&d.body, "\"exceptions\"")
                    && contains(&d.body, "\"stack\"")
                    && contains(&d.body, "boom")
            }),
            "deep" => of.iter().any(|d| contains(&d.body, &"[".repeat(DEPTH))),
            "big-numbers" => of.iter().any(|d| {
                let beyond_64_bits = if sdk == "python" {
                    format!("1{}", "0".repeat(400))
                } else {
                    // 2^70 as a BigInt, which the SDK writes as a string.
                    "\"1180591620717411303424\"".to_string()
                };
                contains(&d.body, &beyond_64_bits)
                    && contains(&d.body, "1.7976931348623157e+308")
                    && contains(&d.body, "5e-324")
            }),
            "nonfinite" if sdk == "python" => of.iter().any(|d| contains(&d.body, "Infinity")),
            "nonfinite" => of.iter().any(|d| contains(&d.body, "\"inf\":null")),
            "huge-exponent" => of.iter().any(|d| contains(&d.body, "1e400")),
            _ => n > 0,
        };
        if n == 0 || !ok {
            problems.push(format!(
                "{sdk}: case {case}: {n} document(s), none with what the case is about"
            ));
        }
    }
    problems
}

/// The cases whose documents are not JSON, so xrayd must reject them as bad JSON: only the
/// Python SDK's `Infinity` / `NaN` (the Node SDK writes `null` for non-finite numbers).
fn rejected_cases(sdk: &str) -> &'static [&'static str] {
    if sdk == "python" { &["nonfinite"] } else { &[] }
}

/// Counts of one case, for the report.
#[derive(Default)]
struct Tally {
    emitted: usize,
    byte_exact: usize,
    rejected: usize,
}

/// Runs the corpus of `sdk` through the relay and xrayd into moto and checks every document.
fn corpus_arrives_byte_exact(sdk: &str, emit: impl FnOnce(SocketAddr, &Path) -> ScriptOutput) {
    let tmp = TempDir::new(&format!("sdk-{sdk}"));
    let moto = start_moto(&tmp.0);
    let creds = moto_setup(&moto, &tmp.0);
    let daemon = start_xrayd(&moto.endpoint(), &creds);
    let tcp = daemon.tcp_addr();
    let relay = CaptureRelay::start(daemon.udp_addr());

    let summary = emit(relay.addr, &tmp.0).json(sdk);
    let sent = summary["sent"].as_u64().expect("sent") as usize;
    poll_until(
        secs(20),
        || format!("the relay got {} of {sent} datagrams", relay.count()),
        || (relay.count() >= sent).then_some(()),
    );
    let captured: Vec<Captured> = relay
        .datagrams()
        .into_iter()
        .map(|d| {
            let at = d.iter().position(|b| *b == b'\n').expect("header line");
            let body = d[at + 1..].to_vec();
            let case = case_of(&body).unwrap_or_else(|| "?".into());
            Captured { case, body }
        })
        .collect();
    assert_eq!(captured.len(), sent, "datagrams the SDK sent vs captured");
    let problems = corpus_problems(sdk, &captured);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Wait until xrayd has dealt with every datagram: sent or rejected.
    let metrics = poll_until(
        UPLOAD_TIMEOUT,
        || format!("xrayd did not upload or reject all {sent} datagrams"),
        || {
            let m = support::scrape(tcp);
            let received = m.value("xrayd_segments_received_total", &[]) as usize;
            let done = m.value("xrayd_segments_sent_total", &[]) as usize
                + m.sum("xrayd_segments_rejected_total") as usize;
            (received == sent && done == sent).then_some(m)
        },
    );
    daemon.sigterm();
    let counts = daemon.final_counts();
    assert_conserved(&counts);

    let ids_file = tmp.0.join("trace-ids.json");
    let ids: Vec<serde_json::Value> = summary["trace_ids"]
        .as_array()
        .expect("trace_ids")
        .iter()
        .map(|t| serde_json::json!({ "trace_id": t }))
        .collect();
    std::fs::write(&ids_file, serde_json::to_string(&ids).unwrap()).unwrap();
    let mut fetched = get_traces(&moto, &creds, &ids_file, &tmp.0).segments;

    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut problems = Vec::new();
    let must_reject = rejected_cases(sdk);
    for doc in &captured {
        let tally = tallies.entry(&doc.case).or_default();
        tally.emitted += 1;
        let found = fetched
            .iter()
            .position(|(_, _, d)| d.as_bytes() == doc.body);
        match (found, must_reject.contains(&doc.case.as_str())) {
            (Some(i), false) => {
                fetched.swap_remove(i);
                tally.byte_exact += 1;
            }
            (None, true) => tally.rejected += 1,
            (Some(_), true) => problems.push(format!(
                "{sdk} {}: a document that is not JSON reached X-Ray: {}",
                doc.case,
                excerpt(&String::from_utf8_lossy(&doc.body), 0)
            )),
            (None, false) => problems.push(missing(sdk, doc, &fetched)),
        }
    }
    for (trace, id, d) in &fetched {
        problems.push(format!(
            "{sdk}: document {trace}/{id} returned once more than sent ({} bytes): {}",
            d.len(),
            excerpt(d, 0)
        ));
    }
    let report: Vec<String> = tallies
        .iter()
        .map(|(case, t)| {
            format!(
                "{case}: {} emitted, {} byte-exact, {} rejected",
                t.emitted, t.byte_exact, t.rejected
            )
        })
        .collect();
    let exact: usize = tallies.values().map(|t| t.byte_exact).sum();
    let rejected: usize = tallies.values().map(|t| t.rejected).sum();
    eprintln!(
        "{sdk} SDK: {sent} documents, {exact} byte-exact in moto, {rejected} rejected as not JSON\n  {}",
        report.join("\n  ")
    );
    assert!(
        problems.is_empty(),
        "{} problem(s); per case:\n  {}\n{}",
        problems.len(),
        report.join("\n  "),
        problems.join("\n")
    );
    assert_eq!(counts["rejected"], rejected as u64, "{counts:?}");
    assert_eq!(counts["rejected_bad_json"], rejected as u64, "{counts:?}");
    assert_eq!(counts["sent"], exact as u64, "{counts:?}");
    assert_eq!(
        metrics.value("xrayd_segments_sent_total", &[]) as usize,
        exact
    );
}

/// Why a document is not among those moto returned: the nearest one of its trace, if any.
fn missing(sdk: &str, doc: &Captured, fetched: &[(String, String, String)]) -> String {
    let body = String::from_utf8_lossy(&doc.body);
    let near = fetched
        .iter()
        .map(|(_, _, d)| d)
        .max_by_key(|d| first_difference(&body, d));
    match near {
        Some(d) if first_difference(&body, d) > 64 => {
            let at = first_difference(&body, d);
            format!(
                "{sdk} {}: differs at byte {at} (sent {} bytes, got {}): sent {} got {}",
                doc.case,
                body.len(),
                d.len(),
                excerpt(&body, at),
                excerpt(d, at)
            )
        }
        _ => format!(
            "{sdk} {}: not returned by BatchGetTraces ({} bytes): {}",
            doc.case,
            body.len(),
            excerpt(&body, 0)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// xrayd

/// xrayd with the standard test command line against `endpoint`, with `creds` (they replace the
/// test credentials `for_endpoint_with_level` sets).
fn start_xrayd(endpoint: &str, creds: &Creds) -> Daemon {
    Daemon::for_endpoint_with_level(
        endpoint,
        None,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", &creds.key_id),
            ("AWS_SECRET_ACCESS_KEY", &creds.secret),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Sampling

/// Runs an SDK's sampling script against xrayd and the fake; checks what the SDK decided and
/// what reached the fake. `open_segments` is how many segments of the open service the SDK
/// sent (the blocked service's are never sent).
fn sampling_through_xrayd(
    sdk: &str,
    run: impl FnOnce(&str) -> ScriptOutput,
    open_segments: impl FnOnce(&serde_json::Value) -> usize,
) {
    let fake = FakeXray::start();
    fake.answer("/GetSamplingRules", 200, &BLOCKING_RULES.replace('\n', ""));
    let d = Daemon::for_endpoint_with_level(&fake.endpoint(), Some("debug"), &[], &[]);
    let tcp = d.tcp_addr();
    let address = format!("udp:{} tcp:{tcp}", d.udp_addr());
    let v = run(&address).json(sdk);

    assert_eq!(v["rules_loaded"], true, "{sdk}: {v}");
    assert_eq!(
        v["rules"],
        serde_json::json!(["Default", "block-blocked-svc"]),
        "{sdk}: {v}"
    );
    assert_eq!(
        v["blocked_sampled"], 0,
        "{sdk}: fixed rate 0 / reservoir 0 stops sampling: {v}"
    );
    assert_eq!(v["open_sampled_before_targets"], 50, "{sdk}: {v}");
    assert_eq!(v["targets_applied"], true, "{sdk}: {v}");
    assert_eq!(
        v["open_sampled_after_targets"], 0,
        "{sdk}: target rate 0 applied: {v}"
    );

    // Every sampling call arrived signed by xrayd, with the SDK's body untouched.
    let rules = fake.seen_on("/GetSamplingRules");
    let targets = fake.seen_on("/SamplingTargets");
    assert!(
        !rules.is_empty() && !targets.is_empty(),
        "{sdk}: {:?}",
        fake.seen()
    );
    for s in rules.iter().chain(&targets) {
        assert!(s.signature.is_ok(), "{sdk}: {} {:?}", s.path, s.signature);
        assert!(
            s.header("authorization")
                .is_some_and(|a| a.contains("/us-east-1/xray/aws4_request")),
            "{sdk}: {:?}",
            s.headers
        );
        assert_eq!(s.status, Some(200), "{sdk}: {}", s.path);
    }
    assert_eq!(rules[0].body, b"{}", "{sdk}: GetSamplingRules body");
    let report: serde_json::Value = serde_json::from_slice(&targets[0].body).unwrap();
    let docs = report["SamplingStatisticsDocuments"].as_array().unwrap();
    let names: Vec<&str> = docs.iter().filter_map(|d| d["RuleName"].as_str()).collect();
    assert!(
        names.contains(&"Default") && names.contains(&"block-blocked-svc"),
        "{sdk}: {report}"
    );
    let blocked = docs
        .iter()
        .find(|d| d["RuleName"] == "block-blocked-svc")
        .unwrap();
    assert!(
        blocked["RequestCount"].as_u64() >= Some(50) && blocked["SampledCount"] == 0,
        "{sdk}: the blocking rule's statistics: {report}"
    );
    assert!(
        blocked["ClientID"].as_str().is_some_and(|c| c.len() == 24),
        "{sdk}: {report}"
    );

    // Only the open service's segments were sampled, sent over UDP and uploaded.
    let expected = open_segments(&v);
    assert!(expected > 0, "{sdk}: {v}");
    assert!(
        fake.wait_documents(expected, secs(20)),
        "{sdk}: {} of {expected} segments uploaded",
        fake.documents().len()
    );
    // xrayd counted what it forwarded.
    let metrics = support::scrape(tcp);
    assert!(
        metrics.proxy_requests("/GetSamplingRules", "200") >= 1.0
            && metrics.proxy_requests("/SamplingTargets", "200") >= 1.0,
        "{sdk}: {metrics:?}"
    );
    d.sigterm();
    let counts = d.final_counts();
    assert_eq!(counts["received"], expected as u64, "{sdk}: {counts:?}");
    let names: Vec<String> = fake
        .documents()
        .iter()
        .map(|doc| {
            serde_json::from_str::<serde_json::Value>(doc).unwrap()["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), expected, "{sdk}: {names:?}");
    assert!(names.iter().all(|n| n == "open-svc"), "{sdk}: {names:?}");
}

fn sdk_env(address: &str) -> [(&str, &str); 1] {
    [("AWS_XRAY_DAEMON_ADDRESS", address)]
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn python_sdk_corpus_reaches_moto_byte_exact() {
    let test = "python_sdk_corpus_reaches_moto_byte_exact";
    if !e2e_support::e2e_enabled(test, PYTHON_MODULES) {
        return;
    }
    corpus_arrives_byte_exact("python", |relay, cwd| {
        let relay = relay.to_string();
        run_script("sdk_corpus.py", &["--daemon", &relay], &[], cwd)
    });
}

#[test]
fn node_sdk_corpus_reaches_moto_byte_exact() {
    let test = "node_sdk_corpus_reaches_moto_byte_exact";
    if !e2e_support::node_e2e_enabled(test, PYTHON_MODULES) {
        return;
    }
    corpus_arrives_byte_exact("node", |relay, cwd| {
        run_node("emit.js", &[], &sdk_env(&relay.to_string()), cwd)
    });
}

#[test]
fn python_sdk_sampling_through_xrayd() {
    let test = "python_sdk_sampling_through_xrayd";
    if !run_or_skip(test, e2e_support::missing_python_modules(&["aws_xray_sdk"])) {
        return;
    }
    let tmp = TempDir::new("sampling-python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/sdk_sampling.py");
    sampling_through_xrayd(
        "python",
        |address| {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg(&script);
            e2e_support::run("sdk_sampling.py", cmd, &sdk_env(address), &tmp.0)
        },
        // The script sends two segments of each service through the recorder.
        |_| 2,
    );
}

#[test]
fn node_sdk_sampling_through_xrayd() {
    let test = "node_sdk_sampling_through_xrayd";
    if !run_or_skip(test, e2e_support::missing_node_prerequisite()) {
        return;
    }
    let tmp = TempDir::new("sampling-node");
    sampling_through_xrayd(
        "node",
        |address| run_node("sampling.js", &[], &sdk_env(address), &tmp.0),
        |v| v["open_segments"].as_u64().unwrap_or(0) as usize,
    );
}

#[test]
fn lone_surrogate_escapes_are_counted_in_json_text() {
    assert_eq!(lone_surrogate_escapes(br#""\ud83d""#), 1);
    assert_eq!(lone_surrogate_escapes(br#""\udcff x \uD800""#), 2);
    assert_eq!(lone_surrogate_escapes(br#""\ud83d\ude80""#), 0, "a pair");
    assert_eq!(
        lone_surrogate_escapes(br#""\\ud83d""#),
        0,
        "an escaped backslash"
    );
    assert_eq!(lone_surrogate_escapes(br#""\\\ud83d""#), 1);
    assert_eq!(lone_surrogate_escapes(br#""\ude80\ud83d""#), 2, "reversed");
    assert_eq!(
        case_of(br#"{"name": "xrayd-conformance deep", "x": 1}"#).as_deref(),
        Some("deep")
    );
    assert_eq!(
        case_of(br#"{"name":"xrayd-conformance streamed child 0"}"#).as_deref(),
        Some("streamed")
    );
}

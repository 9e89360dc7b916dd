//! Support for the TCP port's tests: a loopback fake X-Ray that serves the sampling APIs (and
//! PutTraceSegments / PutTelemetryRecords) and verifies every SigV4 signature with the
//! independent verifier of `tests/support`, a small Prometheus text-format parser, and helpers.
//! The including test crate must declare `mod support;` (tests/support, used read-only).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::support::fake_xray::read_http_request;
use crate::support::http::{Client, Response};
use crate::support::sigv4::{SigCheck, Verifier, WireRequest, header};
use crate::support::{Daemon, TEST_ACCESS_KEY, TEST_REGION, TEST_SECRET_KEY};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub signature: SigCheck,
    pub status: u16,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

struct State {
    seen: Vec<Seen>,
    connections: usize,
    /// path -> (status, body) answers replacing the defaults.
    answers: HashMap<String, (u16, String)>,
    /// path -> Content-Type of the answer (default `application/json`).
    content_types: HashMap<String, String>,
    /// Answer PutTraceSegments with 500.
    fail_segments: bool,
    delay: Duration,
    /// Documents of accepted PutTraceSegments calls.
    documents: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    stop: AtomicBool,
    verifier: Verifier,
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake X-Ray. Stops on drop.
pub struct FakeSampling {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

/// `GetSamplingRules` answer of the fake by default: one rule.
pub const DEFAULT_RULES: &str = r#"{"SamplingRuleRecords":[{"SamplingRule":{"RuleName":"Default","RuleARN":"arn:aws:xray:us-east-1:123456789012:sampling-rule/Default","ResourceARN":"*","Priority":10000,"FixedRate":0.05,"ReservoirSize":1,"ServiceName":"*","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","Version":1,"Attributes":{},"Boost":{"NewField":"passed through"}},"CreatedAt":0,"ModifiedAt":1}]}"#;

impl FakeSampling {
    pub fn start() -> FakeSampling {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                seen: Vec::new(),
                connections: 0,
                answers: HashMap::new(),
                content_types: HashMap::new(),
                fail_segments: false,
                delay: Duration::ZERO,
                documents: Vec::new(),
            }),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            verifier: Verifier::new(TEST_REGION, "xray")
                .with_key(TEST_ACCESS_KEY, TEST_SECRET_KEY)
                .with_max_skew(Duration::from_secs(900)),
            streams: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let conn = {
                    let mut st = sh.lock();
                    st.connections += 1;
                    st.connections - 1
                };
                if let Ok(c) = stream.try_clone() {
                    sh.streams.lock().unwrap().push(c);
                }
                let sh = sh.clone();
                std::thread::spawn(move || serve(sh, stream, conn));
            }
        });
        FakeSampling { shared, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the answer for `path`.
    pub fn answer(&self, path: &str, status: u16, body: &str) {
        self.shared
            .lock()
            .answers
            .insert(path.to_string(), (status, body.to_string()));
    }

    /// Replaces the answer for `path`, with its own Content-Type.
    pub fn answer_typed(&self, path: &str, status: u16, content_type: &str, body: &str) {
        self.answer(path, status, body);
        self.shared
            .lock()
            .content_types
            .insert(path.to_string(), content_type.to_string());
    }

    pub fn fail_segments(&self, fail: bool) {
        self.shared.lock().fail_segments = fail;
    }

    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    pub fn seen_on(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    pub fn documents(&self) -> Vec<String> {
        self.shared.lock().documents.clone()
    }

    /// Waits until `pred` holds on the requests seen.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&[Seen]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if pred(&st.seen) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn wait_documents(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.shared.lock().documents.len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for FakeSampling {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for s in self.shared.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn targets_answer(body: &[u8]) -> String {
    // One target per reported rule: rate 0, quota 0, valid for a minute.
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let docs: Vec<serde_json::Value> = v["SamplingStatisticsDocuments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| {
            serde_json::json!({
                "RuleName": d["RuleName"],
                "FixedRate": 0.0,
                "ReservoirQuota": 0,
                "ReservoirQuotaTTL": now + 60,
                "Interval": 10
            })
        })
        .collect();
    serde_json::json!({
        "SamplingTargetDocuments": docs,
        "LastRuleModification": 0,
        "UnprocessedStatistics": []
    })
    .to_string()
}

fn serve(sh: Arc<Shared>, stream: TcpStream, conn: usize) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let Ok(Some(req)) = read_http_request(&mut reader, &mut writer) else {
            return;
        };
        let signature = sh.verifier.verify(&WireRequest {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &req.headers,
            body: &req.body,
        });
        let (delay, answer, fail_segments, content_type) = {
            let st = sh.lock();
            (
                st.delay,
                st.answers.get(&req.path).cloned(),
                st.fail_segments,
                st.content_types
                    .get(&req.path)
                    .cloned()
                    .unwrap_or_else(|| "application/json".to_string()),
            )
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let (status, body) = if !signature.is_ok() {
            (
                403,
                serde_json::json!({
                    "__type": "InvalidSignatureException",
                    "message": format!("fake: {signature:?}")
                })
                .to_string(),
            )
        } else if let Some(a) = answer {
            a
        } else {
            match req.path.as_str() {
                "/GetSamplingRules" => (200, DEFAULT_RULES.to_string()),
                "/SamplingTargets" => (200, targets_answer(&req.body)),
                "/SamplingStatisticSummaries" => {
                    (200, r#"{"SamplingStatisticSummaries":[]}"#.to_string())
                }
                "/TraceSegments" if fail_segments => (
                    500,
                    r#"{"__type":"InternalFailure","message":"fake outage"}"#.to_string(),
                ),
                "/TraceSegments" => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&req.body).unwrap_or_default();
                    let docs: Vec<String> = v["TraceSegmentDocuments"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect();
                    sh.lock().documents.extend(docs);
                    (200, r#"{"UnprocessedTraceSegments":[]}"#.to_string())
                }
                "/TelemetryRecords" => (200, "{}".to_string()),
                _ => (
                    404,
                    r#"{"__type":"UnknownOperationException","message":"fake: no such path"}"#
                        .to_string(),
                ),
            }
        };
        {
            let mut st = sh.lock();
            st.seen.push(Seen {
                conn,
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
                signature,
                status,
            });
            sh.cond.notify_all();
        }
        let error_type = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["__type"].as_str().map(str::to_string));
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: fake\r\n",
            body.len()
        );
        if let Some(t) = error_type {
            head.push_str(&format!("x-amzn-ErrorType: {t}\r\n"));
        }
        head.push_str("\r\n");
        use std::io::Write;
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// A JSON content-type header, as SDKs send.
pub fn json_headers() -> Vec<(String, String)> {
    vec![
        ("Host".into(), "127.0.0.1".into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// One request on a fresh connection.
pub fn one_shot(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut c = Client::connect(addr).expect("connect to xrayd");
    c.request(method, path, &json_headers(), body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

const PROXY_PREFIX: &str = "Starting proxy http server on ";

/// Runs xrayd against `endpoint` with both ports on loopback (`-o`, test region), `extra`
/// arguments, and test credentials in the environment when `creds`.
pub fn spawn(endpoint: &str, extra: &[&str], creds: bool) -> Daemon {
    let mut args = vec![
        "-b",
        "127.0.0.1:0",
        "-t",
        "127.0.0.1:0",
        "-o",
        "-n",
        TEST_REGION,
        "--endpoint",
        endpoint,
    ];
    args.extend_from_slice(extra);
    let envs: &[(&str, &str)] = if creds {
        &[
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY),
        ]
    } else {
        &[]
    };
    Daemon::spawn(&args, envs)
}

/// The daemon's TCP address, from its start-up line.
pub fn tcp_addr(d: &Daemon) -> SocketAddr {
    let line = d
        .wait_for_line(PROXY_PREFIX, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no '{PROXY_PREFIX}' line:\n{}", d.log()));
    parse_proxy_line(&line).unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// Parses `Starting proxy http server on <addr>`.
pub fn parse_proxy_line(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(PROXY_PREFIX)? + PROXY_PREFIX.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The daemon's side of the connections to `port` (accepted or still in the backlog): how many,
/// and how many bytes they hold that the daemon has not read yet.
pub fn server_side(port: u16) -> (usize, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let mut n = 0;
    let mut unread = 0;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f
            .get(1)
            .and_then(|a| a.split(':').nth(1))
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        // 01: established (0A is the listener, whose queue counts connections, not bytes).
        if local_port != Some(port) || f.get(3) != Some(&"01") {
            continue;
        }
        n += 1;
        unread += f
            .get(4)
            .and_then(|q| q.split(':').nth(1))
            .and_then(|rx| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
    }
    (n, unread)
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: samples, and the declared type of each family.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub types: HashMap<String, String>,
}

impl Exposition {
    /// The value of the sample `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// `get`, panicking when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// `xrayd_proxy_requests_total{path, status}` (panics if there is no such sample).
    pub fn proxy_requests(&self, path: &str, status: &str) -> f64 {
        self.value(
            "xrayd_proxy_requests_total",
            &[("path", path), ("status", status)],
        )
    }

    /// Sum over every sample named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Parses the Prometheus text format (0.0.4) strictly: every sample must belong to a family
/// declared by a `# TYPE` line before it, names and label names must be valid, label values
/// properly quoted and escaped, histograms cumulative with a `+Inf` bucket equal to `_count`.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    if !text.ends_with('\n') {
        return Err("exposition must end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", no + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| err("TYPE without name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| err("TYPE without type".into()))?;
                    if !valid_name(name) {
                        return Err(err("bad family name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err(format!("bad type {kind}")));
                    }
                    if e.types.insert(name.into(), kind.into()).is_some() {
                        return Err(err("family declared twice".into()));
                    }
                }
                Some("HELP") => {
                    parts
                        .next()
                        .ok_or_else(|| err("HELP without name".into()))?;
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => return Err(err("no value".into())),
        };
        if !valid_name(name) {
            return Err(err("bad metric name".into()));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .ok_or_else(|| err("eol".into()))?;
                if body[start..].starts_with('}') {
                    end = start + 1;
                    break;
                }
                let eq = body[start..]
                    .find('=')
                    .ok_or_else(|| err("label without =".into()))?;
                let lname = &body[start..start + eq];
                if !valid_name(lname) || lname.contains(':') {
                    return Err(err(format!("bad label name {lname:?}")));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= start + eq) {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted".into()));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(err("bad escape".into())),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => return Err(err("unterminated value".into())),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("repeated label".into()));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    _ => return Err(err("expected , or }".into())),
                }
            }
            &body[end..]
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| err("no value".into()))?).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| e.types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        let Some(kind) = e.types.get(family) else {
            return Err(err("sample of an undeclared family".into()));
        };
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        if e.samples
            .iter()
            .any(|s| s.name == name && s.labels == labels)
        {
            return Err(err("duplicate sample".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (family, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = e
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .map(|s| (parse_value(&s.labels["le"]).unwrap(), s.value))
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        if buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            return Err(format!("{family}: no +Inf bucket"));
        }
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{family}: buckets are not cumulative"));
        }
        let count = e.value(&format!("{family}_count"), &[]);
        if buckets.last().unwrap().1 != count {
            return Err(format!("{family}: +Inf bucket differs from _count"));
        }
        e.value(&format!("{family}_sum"), &[]);
    }
    Ok(e)
}

/// Fetches and parses `/metrics`.
pub fn scrape(addr: SocketAddr) -> Exposition {
    let r = one_shot(addr, "GET", "/metrics", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    parse_prometheus(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
}

#[test]
fn prometheus_parser_checks_what_it_reads() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"q\\\\\",z=\"\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let e = parse_prometheus(ok).unwrap();
    assert_eq!(e.value("a_total", &[("k", "v\"q\\"), ("z", "")]), 3.0);
    assert_eq!(e.value("h_count", &[]), 2.0);
    for bad in [
        "a 1\n",
        "# TYPE a counter\na -1\n",
        "# TYPE a counter\na{k=v} 1\n",
        "# TYPE a counter\na 1\na 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
        "# TYPE a counter\na 1",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}

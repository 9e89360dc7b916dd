//! FakeXray: a loopback HTTP/1.1 stand-in for the X-Ray API (PutTraceSegments,
//! PutTelemetryRecords) that verifies every signature, records every request and
//! answers according to a programmable script.

use super::sigv4::{SigCheck, Verifier, WireRequest, header};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Access key id the tests give the daemon.
pub const TEST_ACCESS_KEY: &str = "AKIDTEST";
/// Its secret.
pub const TEST_SECRET_KEY: &str = "xrayd/Test+Secret0123456789EXAMPLEKEY";
/// Region the tests sign for.
pub const TEST_REGION: &str = "us-east-1";

/// X-Ray's documented limits, enforced by the fake when `enforce_limits` is on.
pub const MAX_DOCS_PER_REQUEST: usize = 50;
pub const MAX_DOC_BYTES: usize = 64 * 1024;

const THROTTLED_BODY: &str = r#"{"__type":"ThrottledException","message":"Rate exceeded"}"#;
const INTERNAL_BODY: &str = r#"{"__type":"InternalFailure","message":"Internal failure (fake)"}"#;
const INVALID_REQUEST_BODY: &str =
    r#"{"__type":"InvalidRequestException","message":"Invalid request (fake)"}"#;

/// How the fake answers one PutTraceSegments request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// 200 `{"UnprocessedTraceSegments":[]}`: every document delivered.
    Ok,
    /// This status and JSON body; `x-amzn-ErrorType` is taken from the body's
    /// `__type`. A 2xx status counts the documents as delivered.
    Status(u16, String),
    /// 200 with the first n documents returned as unprocessed (`InvalidSegment`,
    /// ids from each document's `id`); only the others count as delivered.
    Unprocessed(usize),
    /// Wait, then behave as the inner behaviour.
    Delay(Duration, Box<Behaviour>),
    /// Read the request, then close the connection without answering.
    CloseConnection,
    /// 200 with a body that is not JSON. Counted as delivered (the service took
    /// the request; the client just cannot read the answer).
    Garbage,
}

impl Behaviour {
    pub fn throttled() -> Self {
        Behaviour::Status(429, THROTTLED_BODY.to_string())
    }
    pub fn server_error() -> Self {
        Behaviour::Status(500, INTERNAL_BODY.to_string())
    }
    pub fn service_unavailable() -> Self {
        Behaviour::Status(
            503,
            r#"{"__type":"ServiceUnavailable","message":"Service unavailable (fake)"}"#.into(),
        )
    }
    pub fn bad_request() -> Self {
        Behaviour::Status(400, INVALID_REQUEST_BODY.to_string())
    }
    pub fn delay(d: Duration, then: Behaviour) -> Self {
        Behaviour::Delay(d, Box::new(then))
    }
}

/// Probabilistic faults, used instead of the default behaviour once the script
/// queue is empty. Fractions are of all requests; the rest are answered `Ok`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomFaults {
    pub p_500: f64,
    pub p_429: f64,
    /// Answer 200 with 1..=all documents unprocessed.
    pub p_unprocessed: f64,
    pub seed: u64,
}

/// One recorded HTTP request.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Arrival order among requests of the same kind, from 0.
    pub seq: usize,
    /// Connection number (one per accepted TCP connection, from 0).
    pub conn: usize,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking.
    pub body: Vec<u8>,
    pub chunked: bool,
    /// `TraceSegmentDocuments`, exactly as decoded from the JSON body.
    pub documents: Vec<String>,
    /// Set when the body is not `{"TraceSegmentDocuments":[<string>...]}`.
    pub json_error: Option<String>,
    pub signature: SigCheck,
    pub security_token: Option<String>,
    pub xray_timestamp: Option<String>,
    pub user_agent: Option<String>,
    pub received_at: Instant,
    /// The behaviour chosen for it (None for telemetry / unknown paths).
    pub behaviour: Option<Behaviour>,
    /// Status written back, None while pending or when the connection was closed.
    pub status: Option<u16>,
    pub answered_at: Option<Instant>,
    /// Ids returned in `UnprocessedTraceSegments`.
    pub unprocessed_ids: Vec<String>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    /// Answered with a 2xx status.
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }
}

/// Configuration of a FakeXray.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub region: String,
    /// access key id -> secret
    pub credentials: Vec<(String, String)>,
    /// Answer 403 InvalidSignatureException to badly signed requests (they do not
    /// consume the script). Otherwise they are only counted.
    pub reject_bad_signatures: bool,
    /// Answer 400 to requests over 50 documents or with a document over 64 KiB.
    pub enforce_limits: bool,
    /// Behaviour once the script is exhausted (and no random faults are set).
    pub default: Behaviour,
    /// How far the fake's clock is ahead of the machine's. When set, the fake answers like X-Ray
    /// to requests signed more than 5 minutes off its time: 403 InvalidSignatureException
    /// "Signature expired", with its time in the `Date` header (every answer carries one).
    pub clock_ahead: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            region: TEST_REGION.to_string(),
            credentials: vec![(TEST_ACCESS_KEY.to_string(), TEST_SECRET_KEY.to_string())],
            reject_bad_signatures: true,
            enforce_limits: true,
            default: Behaviour::Ok,
            clock_ahead: Duration::ZERO,
        }
    }
}

struct State {
    segments: Vec<RecordedRequest>,
    telemetry: Vec<RecordedRequest>,
    other: Vec<RecordedRequest>,
    /// (request seq, document)
    delivered: Vec<(usize, String)>,
    script: VecDeque<Behaviour>,
    default: Behaviour,
    random: Option<(RandomFaults, u64)>,
    bad_signatures: usize,
    connections: usize,
    /// Requests with a document containing this text are refused whole (400).
    poison: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    stop: AtomicBool,
    verifier: Verifier,
    config: FakeConfig,
    streams: Mutex<Vec<TcpStream>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// The fake's clock.
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.config.clock_ahead
    }

    /// With a clock of its own: the `x-amz-date` the request was signed with, when it is more
    /// than 5 minutes off the fake's time.
    fn signed_too_far_off(&self, rec: &RecordedRequest) -> Option<String> {
        if self.config.clock_ahead.is_zero() {
            return None;
        }
        let amz = rec.header("x-amz-date")?;
        let signed = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", amz)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp();
        let now = jiff::Timestamp::try_from(self.now()).ok()?;
        let off = (now.as_second() - signed.as_second()).abs();
        (off > 300).then(|| amz.to_string())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake X-Ray service. Stops (closing every connection) on drop.
pub struct FakeXray {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl FakeXray {
    /// Default configuration: us-east-1, key AKIDTEST, everything answered Ok.
    pub fn start() -> FakeXray {
        Self::start_with(FakeConfig::default())
    }

    pub fn start_with(config: FakeConfig) -> FakeXray {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake X-Ray");
        let addr = listener.local_addr().expect("fake X-Ray address");
        let mut verifier =
            Verifier::new(&config.region, "xray").with_max_skew(Duration::from_secs(15 * 60));
        for (k, s) in &config.credentials {
            verifier = verifier.with_key(k, s);
        }
        if !config.clock_ahead.is_zero() {
            // Checked against the fake's own clock instead (see `signed_too_far_off`).
            verifier.max_skew = None;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                segments: Vec::new(),
                telemetry: Vec::new(),
                other: Vec::new(),
                delivered: Vec::new(),
                script: VecDeque::new(),
                default: config.default.clone(),
                random: None,
                bad_signatures: 0,
                connections: 0,
                poison: None,
            }),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            verifier,
            config,
            streams: Mutex::new(Vec::new()),
            handles: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fake-xray-accept".into())
            .spawn(move || accept_loop(sh, listener))
            .expect("spawn accept thread");
        FakeXray {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the script: behaviours consumed one per request, in order.
    pub fn set_script(&self, script: Vec<Behaviour>) {
        self.shared.lock().script = script.into();
    }

    pub fn push_script(&self, b: Behaviour) {
        self.shared.lock().script.push_back(b);
    }

    /// Behaviours not yet consumed.
    pub fn script_remaining(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Behaviour once the script is exhausted.
    pub fn set_default(&self, b: Behaviour) {
        self.shared.lock().default = b;
    }

    /// Answer 400 SerializationException to every request with a document containing `marker`,
    /// as X-Ray refuses a whole request for one document it cannot read (before the script).
    pub fn set_poison(&self, marker: &str) {
        self.shared.lock().poison = Some(marker.to_string());
    }

    /// Random faults instead of the default behaviour (None to turn off).
    pub fn set_random(&self, faults: Option<RandomFaults>) {
        self.shared.lock().random = faults.map(|f| (f, f.seed));
    }

    /// Every PutTraceSegments request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().segments.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().segments.len()
    }

    /// Every PutTelemetryRecords request so far.
    pub fn telemetry_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().telemetry.clone()
    }

    /// Requests to any other path (answered 404).
    pub fn other_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().other.clone()
    }

    /// Documents of requests answered 2xx, minus the ones returned unprocessed,
    /// in the order the answers were written.
    pub fn delivered_documents(&self) -> Vec<String> {
        self.shared
            .lock()
            .delivered
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }

    pub fn delivered_count(&self) -> usize {
        self.shared.lock().delivered.len()
    }

    /// Requests (segments and telemetry) whose signature did not verify.
    pub fn bad_signatures(&self) -> usize {
        self.shared.lock().bad_signatures
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Largest number of documents in one PutTraceSegments request.
    pub fn max_documents_per_request(&self) -> usize {
        self.shared
            .lock()
            .segments
            .iter()
            .map(|r| r.documents.len())
            .max()
            .unwrap_or(0)
    }

    /// Most PutTraceSegments requests ever open at once (from arrival to answer).
    pub fn max_in_flight(&self) -> usize {
        let st = self.shared.lock();
        let mut events: Vec<(Instant, i32)> = Vec::new();
        for r in &st.segments {
            events.push((r.received_at, 1));
            if let Some(a) = r.answered_at {
                events.push((a, -1));
            }
        }
        // Ends before starts at the same instant.
        events.sort();
        let (mut cur, mut max) = (0i32, 0i32);
        for (_, d) in events {
            cur += d;
            max = max.max(cur);
        }
        max as usize
    }

    fn wait_until(&self, timeout: Duration, pred: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .cond
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until at least `n` documents are delivered.
    pub fn wait_for_documents(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.delivered.len() >= n)
    }

    /// Wait until requests carrying at least `n` documents in total have arrived
    /// (whatever their answer).
    pub fn wait_for_received_documents(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| {
            s.segments.iter().map(|r| r.documents.len()).sum::<usize>() >= n
        })
    }

    /// Wait until at least `n` PutTraceSegments requests have arrived.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.segments.len() >= n)
    }

    /// Wait until at least `n` PutTraceSegments requests have been answered or closed.
    pub fn wait_for_answered(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| {
            s.segments
                .iter()
                .filter(|r| r.answered_at.is_some())
                .count()
                >= n
        })
    }

    pub fn wait_for_telemetry(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.telemetry.len() >= n)
    }

    /// One line per request, for assertion messages.
    pub fn summary(&self) -> String {
        let st = self.shared.lock();
        let mut s = format!(
            "{} segment requests, {} delivered docs, {} bad signatures, {} telemetry, {} other\n",
            st.segments.len(),
            st.delivered.len(),
            st.bad_signatures,
            st.telemetry.len(),
            st.other.len()
        );
        for r in st.segments.iter().take(200) {
            s.push_str(&format!(
                "  #{} conn {} docs {} sig {:?} behaviour {:?} status {:?}\n",
                r.seq,
                r.conn,
                r.documents.len(),
                r.signature,
                r.behaviour,
                r.status
            ));
        }
        s
    }
}

impl Drop for FakeXray {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for s in self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        let handles: Vec<_> = self
            .shared
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let conn = {
            let mut st = shared.lock();
            st.connections += 1;
            st.connections - 1
        };
        if let Ok(c) = stream.try_clone() {
            shared
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("fake-xray-conn-{conn}"))
            .spawn(move || serve_connection(sh, stream, conn))
            .expect("spawn connection thread");
        shared
            .handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(h);
    }
}

/// A parsed HTTP/1.1 request.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

const MAX_LINE: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        return Err(std::io::Error::other("line too long or truncated"));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::other("non-UTF-8 header line"))
}

/// Read one request; `Ok(None)` on a clean EOF between requests.
pub fn read_http_request(
    r: &mut impl BufRead,
    w: &mut impl Write,
) -> std::io::Result<Option<HttpRequest>> {
    let line = loop {
        match read_line(r)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(std::io::Error::other(format!("bad request line {line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(std::io::Error::other(format!("bad version {version:?}")));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let Some(h) = read_line(r)? else {
            return Err(std::io::Error::other("EOF in headers"));
        };
        if h.is_empty() {
            break;
        }
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| std::io::Error::other(format!("bad header line {h:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    if header(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line =
                read_line(r)?.ok_or_else(|| std::io::Error::other("EOF in chunk size"))?;
            let size_str = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    match read_line(r)? {
                        None => break,
                        Some(l) if l.is_empty() => break,
                        Some(_) => {}
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(std::io::Error::other("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = Vec::new();
            r.read_until(b'\n', &mut crlf)?;
        }
    } else if let Some(cl) = header(&headers, "content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad content-length {cl:?}")))?;
        if n > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
        chunked,
    }))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_response(
    w: &mut impl Write,
    now: SystemTime,
    code: u16,
    content_type: &str,
    body: &str,
    request_id: &str,
    close: bool,
) -> std::io::Result<()> {
    let date = jiff::Timestamp::try_from(now)
        .ok()
        .and_then(|t| {
            jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&t)
                .ok()
        })
        .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nDate: {date}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: {request_id}\r\n",
        reason(code),
        body.len()
    );
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(t) = m.get("__type").and_then(|t| t.as_str())
    {
        head.push_str(&format!("x-amzn-ErrorType: {t}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body.as_bytes());
    w.write_all(&all)?;
    w.flush()
}

fn serve_connection(shared: Arc<Shared>, stream: TcpStream, conn: usize) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(256 * 1024, read_half);
    let mut writer = stream;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_http_request(&mut reader, &mut writer) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let close_requested =
            header(&req.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let keep = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/TraceSegments") => {
                handle_segments(&shared, conn, req, &mut writer, close_requested)
            }
            ("POST", "/TelemetryRecords") => {
                handle_simple(&shared, conn, req, &mut writer, close_requested, true)
            }
            _ => handle_simple(&shared, conn, req, &mut writer, close_requested, false),
        };
        if !keep || close_requested {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn base_record(shared: &Shared, conn: usize, req: HttpRequest) -> RecordedRequest {
    let signature = shared.verifier.verify(&WireRequest {
        method: &req.method,
        path: &req.path,
        query: &req.query,
        headers: &req.headers,
        body: &req.body,
    });
    let get = |n: &str| header(&req.headers, n).map(str::to_string);
    RecordedRequest {
        seq: 0,
        conn,
        security_token: get("x-amz-security-token"),
        xray_timestamp: get("x-amzn-xray-timestamp"),
        user_agent: get("user-agent"),
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        body: req.body,
        chunked: req.chunked,
        documents: Vec::new(),
        json_error: None,
        signature,
        received_at: Instant::now(),
        behaviour: None,
        status: None,
        answered_at: None,
        unprocessed_ids: Vec::new(),
    }
}

/// Telemetry (200 `{}`) and unknown paths (404).
fn handle_simple(
    shared: &Shared,
    conn: usize,
    req: HttpRequest,
    w: &mut TcpStream,
    close: bool,
    telemetry: bool,
) -> bool {
    let mut rec = base_record(shared, conn, req);
    let (code, body) = if !telemetry {
        (
            404,
            r#"{"__type":"UnknownOperationException","message":"no such path (fake)"}"#,
        )
    } else if !rec.signature.is_ok() && shared.config.reject_bad_signatures {
        (
            403,
            r#"{"__type":"InvalidSignatureException","message":"signature mismatch (fake)"}"#,
        )
    } else {
        (200, "{}")
    };
    rec.status = Some(code);
    rec.answered_at = Some(Instant::now());
    {
        let mut st = shared.lock();
        if !rec.signature.is_ok() && telemetry {
            st.bad_signatures += 1;
        }
        let list = if telemetry {
            &mut st.telemetry
        } else {
            &mut st.other
        };
        rec.seq = list.len();
        list.push(rec);
        shared.cond.notify_all();
    }
    write_response(
        w,
        shared.now(),
        code,
        "application/json",
        body,
        "fake-simple",
        close,
    )
    .is_ok()
}

fn parse_documents(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let arr = v
        .get("TraceSegmentDocuments")
        .and_then(|a| a.as_array())
        .ok_or("no TraceSegmentDocuments array")?;
    arr.iter()
        .map(|d| {
            d.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("document is not a string: {d}"))
        })
        .collect()
}

/// The `id` of a segment document ("" when absent or not JSON).
pub fn document_id(doc: &str) -> String {
    serde_json::from_str::<serde_json::Value>(doc)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
        .unwrap_or_default()
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn choose_behaviour(shared: &Shared, st: &mut State, rec: &RecordedRequest) -> Behaviour {
    if !rec.signature.is_ok() && shared.config.reject_bad_signatures {
        return Behaviour::Status(
            403,
            r#"{"__type":"InvalidSignatureException","message":"The request signature we calculated does not match the signature you provided (fake)"}"#.into(),
        );
    }
    if let Some(amz) = shared.signed_too_far_off(rec) {
        return Behaviour::Status(
            403,
            format!(
                r#"{{"__type":"InvalidSignatureException","message":"Signature expired: {amz} is now earlier than the fake's time minus 5 min."}}"#
            ),
        );
    }
    if let Some(e) = &rec.json_error {
        return Behaviour::Status(
            400,
            format!(
                r#"{{"__type":"SerializationException","message":{}}}"#,
                serde_json::Value::String(e.clone())
            ),
        );
    }
    if shared.config.enforce_limits
        && (rec.documents.len() > MAX_DOCS_PER_REQUEST
            || rec.documents.iter().any(|d| d.len() > MAX_DOC_BYTES))
    {
        return Behaviour::bad_request();
    }
    if let Some(p) = &st.poison
        && rec.documents.iter().any(|d| d.contains(p.as_str()))
    {
        return Behaviour::Status(
            400,
            r#"{"__type":"SerializationException","message":"Cannot read a document (fake)"}"#
                .into(),
        );
    }
    if let Some(b) = st.script.pop_front() {
        return b;
    }
    if let Some((f, rng)) = &mut st.random {
        let f = *f;
        let x = splitmix(rng);
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let n = rec.documents.len().max(1);
        return if u < f.p_500 {
            Behaviour::server_error()
        } else if u < f.p_500 + f.p_429 {
            Behaviour::throttled()
        } else if u < f.p_500 + f.p_429 + f.p_unprocessed {
            Behaviour::Unprocessed(1 + (splitmix(rng) as usize) % n)
        } else {
            Behaviour::Ok
        };
    }
    st.default.clone()
}

fn handle_segments(
    shared: &Shared,
    conn: usize,
    req: HttpRequest,
    w: &mut TcpStream,
    close: bool,
) -> bool {
    let mut rec = base_record(shared, conn, req);
    match parse_documents(&rec.body) {
        Ok(d) => rec.documents = d,
        Err(e) => rec.json_error = Some(e),
    }
    let documents = rec.documents.clone();
    let (seq, behaviour) = {
        let mut st = shared.lock();
        if !rec.signature.is_ok() {
            st.bad_signatures += 1;
        }
        let b = choose_behaviour(shared, &mut st, &rec);
        rec.behaviour = Some(b.clone());
        rec.seq = st.segments.len();
        let seq = rec.seq;
        st.segments.push(rec);
        shared.cond.notify_all();
        (seq, b)
    };
    // Resolve delays (interruptible by stop).
    let mut b = behaviour;
    while let Behaviour::Delay(d, inner) = b {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(10)));
        }
        b = *inner;
    }
    let request_id = format!("fake-{seq}");
    let (code, content_type, body, unprocessed): (u16, &str, String, usize) = match b {
        Behaviour::Ok => (
            200,
            "application/json",
            r#"{"UnprocessedTraceSegments":[]}"#.to_string(),
            0,
        ),
        Behaviour::Status(code, body) => (code, "application/json", body, 0),
        Behaviour::Garbage => (
            200,
            "text/html",
            "<html><body>this is not JSON</body></html>".to_string(),
            0,
        ),
        Behaviour::Unprocessed(n) => {
            let n = n.min(documents.len());
            let list: Vec<serde_json::Value> = documents[..n]
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "Id": document_id(d),
                        "ErrorCode": "InvalidSegment",
                        "Message": "Invalid segment (fake)"
                    })
                })
                .collect();
            (
                200,
                "application/json",
                serde_json::json!({ "UnprocessedTraceSegments": list }).to_string(),
                n,
            )
        }
        Behaviour::CloseConnection => {
            let _ = w.shutdown(Shutdown::Both);
            let mut st = shared.lock();
            st.segments[seq].answered_at = Some(Instant::now());
            shared.cond.notify_all();
            return false;
        }
        Behaviour::Delay(..) => unreachable!("delays resolved above"),
    };
    // Record the outcome before writing, so that a client that has read the
    // answer always finds it recorded; undo it if the write fails.
    let delivered_now = (200..300).contains(&code);
    {
        let mut st = shared.lock();
        let r = &mut st.segments[seq];
        r.answered_at = Some(Instant::now());
        r.status = Some(code);
        r.unprocessed_ids = documents[..unprocessed]
            .iter()
            .map(|d| document_id(d))
            .collect();
        if delivered_now {
            st.delivered
                .extend(documents[unprocessed..].iter().map(|d| (seq, d.clone())));
        }
    }
    let ok = write_response(
        w,
        shared.now(),
        code,
        content_type,
        &body,
        &request_id,
        close,
    )
    .is_ok();
    let mut st = shared.lock();
    if !ok {
        st.segments[seq].status = None;
        st.segments[seq].unprocessed_ids.clear();
        st.delivered.retain(|(s, _)| *s != seq);
    }
    shared.cond.notify_all();
    ok
}

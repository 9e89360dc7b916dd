//! FakeXray: the one fake AWS endpoint of the tests and the harness, a loopback HTTP/1.1 server
//! (std only) that plays X-Ray (PutTraceSegments, PutTelemetryRecords, GetSamplingRules,
//! SamplingTargets), EC2 instance metadata, and, through a handler closure, anything else (STS,
//! the container credential endpoint, an HTTP proxy). It re-verifies every X-Ray signature with
//! the independent verifier of `sigv4.rs`, records every request, and answers according to a
//! script (PutTraceSegments), per-path overrides, random faults and delays; it can be taken down
//! and brought back on the same port.

use super::answers::{Answer, DEFAULT_RULES, EMPTY_SUMMARIES, error_kind, sampling_targets};
use super::sigv4::{SigCheck, Verifier, WireRequest, header};
use super::wire::{HttpRequest, read_http_request, write_response};
use std::collections::{HashMap, VecDeque};
use std::io::BufReader;
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
    /// This status with an AWS-style error body whose `__type` follows the status (429
    /// throttling, other 4xx invalid request, the rest internal failure).
    pub fn status(code: u16) -> Self {
        Behaviour::Status(
            code,
            format!(
                r#"{{"__type":"{}","message":"fake {code}"}}"#,
                error_kind(code)
            ),
        )
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
    /// Arrival order among all requests, from 0.
    pub arrival: usize,
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
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body of {} is not JSON ({e}): {}", self.path, self.text()))
    }
    /// The body as a form (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> HashMap<String, String> {
        super::answers::form_decode(&self.text())
    }
    /// Whether the request carries a valid SigV4 signature by `key`/`secret` for the region and
    /// service of its own credential scope (re-verified with the independent verifier), with
    /// `token` as its `x-amz-security-token` (none when `None`). Says what differs when not.
    pub fn signed_by(&self, key: &str, secret: &str, token: Option<&str>) -> Result<(), String> {
        let auth = self
            .header("authorization")
            .ok_or("no authorization header")?;
        let parsed = super::sigv4::parse_authorization(auth)?;
        if parsed.access_key_id != key {
            return Err(format!("signed by {}, not {key}", parsed.access_key_id));
        }
        if self.header("x-amz-security-token") != token {
            return Err(format!(
                "x-amz-security-token {:?}, expected {token:?}",
                self.header("x-amz-security-token")
            ));
        }
        let check = Verifier::new(&parsed.region, &parsed.service)
            .with_key(key, secret)
            .verify(&WireRequest {
                method: &self.method,
                path: &self.path,
                query: &self.query,
                headers: &self.headers,
                body: &self.body,
            });
        if check.is_ok() {
            Ok(())
        } else {
            Err(format!("{check:?}"))
        }
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
    /// Close every connection after its answer (`Connection: close`), as a service behind a
    /// load balancer may: every request then opens a connection of its own.
    pub close_connections: bool,
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
            close_connections: false,
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
    /// Requests received so far, of any kind.
    arrivals: usize,
    /// Requests with a document containing this text are refused whole (400).
    poison: Option<String>,
    /// How PutTelemetryRecords is answered (`Ok`: 200 `{}`).
    telemetry_default: Behaviour,
    /// Answers replacing the built-in ones, by path.
    answers: HashMap<String, Answer>,
    /// Instance metadata: path under `/latest/meta-data/` -> value.
    metadata: HashMap<String, String>,
    /// Added before every answer.
    delay: Duration,
    /// Whether the listener is bound (see [`FakeXray::down`]).
    listening: bool,
}

/// Answers any request the built-in routes do not (or, with [`FakeXray::serve`], every
/// request); `None` leaves it to the built-in routes.
pub type Handler = dyn Fn(&RecordedRequest) -> Option<Answer> + Send + Sync;

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    stop: AtomicBool,
    verifier: Verifier,
    config: FakeConfig,
    streams: Mutex<Vec<TcpStream>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// False while the fake is down (connections refused).
    up: AtomicBool,
    handler: Option<Box<Handler>>,
}

impl Shared {
    /// Waits `d`, or less when the fake stops; false if it stopped.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut st = self.lock();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            st = self
                .cond
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

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
        Self::start_full(config, None)
    }

    /// A fake whose `handler` answers every request it returns `Some` for, before the built-in
    /// routes (PutTraceSegments included).
    pub fn start_with_handler(
        config: FakeConfig,
        handler: impl Fn(&RecordedRequest) -> Option<Answer> + Send + Sync + 'static,
    ) -> FakeXray {
        Self::start_full(config, Some(Box::new(handler)))
    }

    /// A plain loopback HTTP service answering every request with `handler`, one request per
    /// connection (`Connection: close`): STS, a container credential endpoint, instance metadata
    /// or a proxy, as the test scripts it. Every request is recorded (see [`FakeXray::seen`]).
    pub fn serve(handler: impl Fn(&RecordedRequest) -> Answer + Send + Sync + 'static) -> FakeXray {
        Self::start_with_handler(
            FakeConfig {
                close_connections: true,
                reject_bad_signatures: false,
                ..FakeConfig::default()
            },
            move |r| Some(handler(r)),
        )
    }

    fn start_full(config: FakeConfig, handler: Option<Box<Handler>>) -> FakeXray {
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
                arrivals: 0,
                poison: None,
                telemetry_default: Behaviour::Ok,
                answers: HashMap::new(),
                metadata: HashMap::new(),
                delay: Duration::ZERO,
                listening: true,
            }),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            verifier,
            config,
            streams: Mutex::new(Vec::new()),
            handles: Mutex::new(Vec::new()),
            up: AtomicBool::new(true),
            handler,
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

    /// Same as [`FakeXray::endpoint`].
    pub fn url(&self) -> String {
        self.endpoint()
    }

    /// Stops listening: new connections are refused until [`FakeXray::up`] (open ones stay).
    pub fn down(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        // Wake the acceptor, which then drops its listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        assert!(
            self.wait_until(Duration::from_secs(5), |s| !s.listening),
            "the fake did not stop listening"
        );
    }

    /// Listens again, on the same port.
    pub fn up(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
        self.shared.cond.notify_all();
        assert!(
            self.wait_until(Duration::from_secs(5), |s| s.listening),
            "the fake did not listen again"
        );
    }

    /// How PutTelemetryRecords is answered from now on (`Ok`: 200 `{}`; `Unprocessed` counts
    /// as `Ok`).
    pub fn set_telemetry_default(&self, b: Behaviour) {
        self.shared.lock().telemetry_default = b;
    }

    /// Answer every request for `path` (other than PutTraceSegments) with `status` and a JSON
    /// `body`, once its signature verified, instead of the built-in answer.
    pub fn answer(&self, path: &str, status: u16, body: &str) {
        self.set_answer(path, Answer::json(status, body));
    }

    /// Like [`FakeXray::answer`], with its own Content-Type.
    pub fn answer_typed(&self, path: &str, status: u16, content_type: &str, body: &str) {
        self.set_answer(path, Answer::new(status, content_type, body));
    }

    pub fn set_answer(&self, path: &str, answer: Answer) {
        self.shared.lock().answers.insert(path.to_string(), answer);
    }

    /// Instance metadata: `GET /latest/meta-data/<path>` answers `value` (after the IMDSv2
    /// token `PUT /latest/api/token`, answered `fake-token`).
    pub fn set_metadata(&self, path: &str, value: &str) {
        self.shared
            .lock()
            .metadata
            .insert(path.to_string(), value.to_string());
    }

    /// Wait this long before every answer from now on (on top of scripted delays).
    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }

    /// PutTraceSegments answered 500 (`true`) or Ok (`false`) once the script is exhausted.
    pub fn fail_segments(&self, fail: bool) {
        self.set_default(if fail {
            Behaviour::server_error()
        } else {
            Behaviour::Ok
        });
    }

    /// Every request so far, whatever its path, in arrival order.
    pub fn seen(&self) -> Vec<RecordedRequest> {
        merged(&self.shared.lock())
    }

    /// Every request so far for `path`, in arrival order.
    pub fn seen_on(&self, path: &str) -> Vec<RecordedRequest> {
        self.seen().into_iter().filter(|r| r.path == path).collect()
    }

    /// How many requests so far satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&RecordedRequest) -> bool) -> usize {
        self.seen().iter().filter(|r| pred(r)).count()
    }

    /// Wait until `pred` holds on every request so far (in arrival order).
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&[RecordedRequest]) -> bool) -> bool {
        self.wait_until(timeout, |st| pred(&merged(st)))
    }

    /// Wait until `pred` holds on the fake (checked at each change it records, or every 50 ms).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&FakeXray) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let st = self.shared.lock();
            let _ = self
                .shared
                .cond
                .wait_timeout(st, (deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Documents delivered so far (as [`FakeXray::delivered_documents`]).
    pub fn documents(&self) -> Vec<String> {
        self.delivered_documents()
    }

    /// Wait until at least `n` documents are delivered.
    pub fn wait_documents(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for_documents(n, timeout)
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
        self.shared.cond.notify_all();
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

/// Every request of `st`, in arrival order.
fn merged(st: &State) -> Vec<RecordedRequest> {
    let mut all: Vec<RecordedRequest> = st
        .segments
        .iter()
        .chain(&st.telemetry)
        .chain(&st.other)
        .cloned()
        .collect();
    all.sort_by_key(|r| r.arrival);
    all
}

/// Accepts connections, a thread each, until the fake stops; while it is down, holds no
/// listener (so connections are refused) and binds the same address again when it comes back.
fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let addr = listener.local_addr().expect("fake address");
    let mut listener = Some(listener);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if !shared.up.load(Ordering::SeqCst) {
            if listener.take().is_some() {
                shared.lock().listening = false;
                shared.cond.notify_all();
            }
            let st = shared.lock();
            let _ = shared
                .cond
                .wait_timeout_while(st, Duration::from_secs(1), |_| {
                    !shared.up.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst)
                });
            continue;
        }
        let Some(l) = &listener else {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    shared.lock().listening = true;
                    shared.cond.notify_all();
                }
                // The port is briefly unavailable: try again when woken or soon after.
                Err(_) => {
                    let _ = shared.pause(Duration::from_millis(5));
                }
            }
            continue;
        };
        let Ok((stream, _)) = l.accept() else {
            continue;
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        if !shared.up.load(Ordering::SeqCst) {
            // The wake-up connection of `down`.
            continue;
        }
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
        let close = shared.config.close_connections
            || header(&req.headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let rec = base_record(&shared, conn, req);
        let by_handler = shared.handler.as_ref().and_then(|h| h(&rec));
        let keep = match by_handler {
            Some(answer) => handle_other(&shared, rec, Some(answer), &mut writer, close),
            None if rec.method == "POST" && rec.path == "/TraceSegments" => {
                handle_segments(&shared, rec, &mut writer, close)
            }
            None => handle_other(&shared, rec, None, &mut writer, close),
        };
        if !keep || close {
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
        arrival: 0,
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

/// The 403 X-Ray gives a request whose signature does not verify.
fn bad_signature(check: &SigCheck) -> Answer {
    Answer::aws_error(
        403,
        "InvalidSignatureException",
        &format!("signature mismatch (fake): {check:?}"),
    )
}

/// The built-in answer to anything but PutTraceSegments: telemetry, the sampling APIs, instance
/// metadata, and 404 for the rest; or the per-path override. Signed X-Ray calls are verified
/// first. A telemetry `Delay` is returned apart, to be waited outside the lock.
fn builtin_answer(shared: &Shared, st: &State, rec: &RecordedRequest) -> (Answer, Duration) {
    let signed_api = rec.method == "POST"
        && matches!(
            rec.path.as_str(),
            "/TelemetryRecords"
                | "/GetSamplingRules"
                | "/SamplingTargets"
                | "/SamplingStatisticSummaries"
        );
    let checked = signed_api || st.answers.contains_key(&rec.path);
    if checked && !rec.signature.is_ok() && shared.config.reject_bad_signatures {
        return (bad_signature(&rec.signature), Duration::ZERO);
    }
    if let Some(a) = st.answers.get(&rec.path) {
        return (a.clone(), Duration::ZERO);
    }
    let ok = |body: &str| (Answer::json(200, body), Duration::ZERO);
    match (rec.method.as_str(), rec.path.as_str()) {
        ("POST", "/TelemetryRecords") => {
            let mut b = st.telemetry_default.clone();
            let mut wait = Duration::ZERO;
            while let Behaviour::Delay(d, inner) = b {
                wait += d;
                b = *inner;
            }
            let answer = match b {
                Behaviour::Status(code, body) => Answer::json(code, &body),
                Behaviour::Garbage => Answer::new(200, "text/html", "<html>not JSON</html>"),
                _ => Answer::json(200, "{}"),
            };
            (answer, wait)
        }
        ("POST", "/GetSamplingRules") => ok(DEFAULT_RULES),
        ("POST", "/SamplingTargets") => ok(&sampling_targets(&rec.body)),
        ("POST", "/SamplingStatisticSummaries") => ok(EMPTY_SUMMARIES),
        ("PUT", "/latest/api/token") => (Answer::text(200, "fake-token"), Duration::ZERO),
        (_, p) if p.starts_with("/latest/meta-data/") => {
            match st.metadata.get(p.trim_start_matches("/latest/meta-data/")) {
                Some(v) => (Answer::text(200, v), Duration::ZERO),
                None => (Answer::text(404, ""), Duration::ZERO),
            }
        }
        _ => (
            Answer::aws_error(404, "UnknownOperationException", "no such path (fake)"),
            Duration::ZERO,
        ),
    }
}

/// Everything but PutTraceSegments: recorded, answered by `answer` (a handler's) or the
/// built-in routes, after the fake's delay.
fn handle_other(
    shared: &Shared,
    mut rec: RecordedRequest,
    answer: Option<Answer>,
    w: &mut TcpStream,
    close: bool,
) -> bool {
    let telemetry = rec.method == "POST" && rec.path == "/TelemetryRecords";
    let (seq, answer, wait) = {
        let mut st = shared.lock();
        let (answer, mut wait) = match answer {
            Some(a) => (a, Duration::ZERO),
            None => builtin_answer(shared, &st, &rec),
        };
        wait += st.delay;
        if telemetry && !rec.signature.is_ok() {
            st.bad_signatures += 1;
        }
        rec.arrival = st.arrivals;
        st.arrivals += 1;
        let list = if telemetry {
            &mut st.telemetry
        } else {
            &mut st.other
        };
        rec.seq = list.len();
        list.push(rec);
        shared.cond.notify_all();
        (list.len() - 1, answer, wait)
    };
    if !wait.is_zero() && !shared.pause(wait) {
        return false;
    }
    {
        let mut st = shared.lock();
        let list = if telemetry {
            &mut st.telemetry
        } else {
            &mut st.other
        };
        list[seq].status = Some(answer.status);
        list[seq].answered_at = Some(Instant::now());
        shared.cond.notify_all();
    }
    write_response(
        w,
        shared.now(),
        answer.status,
        &answer.content_type,
        &answer.body,
        &format!("fake-other-{seq}"),
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
    mut rec: RecordedRequest,
    w: &mut TcpStream,
    close: bool,
) -> bool {
    match parse_documents(&rec.body) {
        Ok(d) => rec.documents = d,
        Err(e) => rec.json_error = Some(e),
    }
    let documents = rec.documents.clone();
    let (seq, behaviour, delay) = {
        let mut st = shared.lock();
        if !rec.signature.is_ok() {
            st.bad_signatures += 1;
        }
        let b = choose_behaviour(shared, &mut st, &rec);
        rec.behaviour = Some(b.clone());
        rec.seq = st.segments.len();
        rec.arrival = st.arrivals;
        st.arrivals += 1;
        let seq = rec.seq;
        st.segments.push(rec);
        shared.cond.notify_all();
        (seq, b, st.delay)
    };
    // Resolve delays (interruptible by stop).
    if !delay.is_zero() && !shared.pause(delay) {
        return false;
    }
    let mut b = behaviour;
    while let Behaviour::Delay(d, inner) = b {
        if !shared.pause(d) {
            return false;
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
        body.as_bytes(),
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

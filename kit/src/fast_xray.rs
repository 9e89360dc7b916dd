//! The benchmark harness's fake X-Ray, [`FastXray`]: a loopback HTTP/1.1 server (a thread per
//! keep-alive connection, pinned to given CPUs, on a fixed or free port) that accepts
//! `PutTraceSegments` without checking signatures or keeping documents, counts distinct delivered
//! sequence numbers of [`bench_segment`](crate::bench_segment) documents, duplicates and delivery
//! latency, and injects faults (500, 429, unprocessed, delay) by fraction; over plain HTTP, or
//! HTTPS with a self-signed certificate made at start-up (the daemon under test is told not to
//! verify it: `NoVerifySSL`), so that a request costs its TLS too. It reads requests and
//! writes answers with [`wire`](crate::wire), as the recording [`FakeXray`](crate::FakeXray) does;
//! it is the one to use for hundreds of thousands of segments a second.

use std::cell::RefCell;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bench_segment::{self as segment, hex16, split_id};
use crate::process::pin_current_thread;
use crate::wire::{HttpRequest, ResponseHead, read_http_request_into, write_answer};

/// Fault injection: fractions of requests (500, 429) or of documents in accepted requests
/// (unprocessed), and a delay added before every `PutTraceSegments` answer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    pub p500: f64,
    pub p429: f64,
    pub p_unprocessed: f64,
    pub delay: Duration,
    pub seed: u64,
}

impl Faults {
    /// True when any fault is injected.
    pub fn any(&self) -> bool {
        self.p500 > 0.0 || self.p429 > 0.0 || self.p_unprocessed > 0.0 || !self.delay.is_zero()
    }
}

/// Largest sequence number tracked (a garbage id must not allocate a huge bitmap).
const MAX_SEQ: u64 = 1 << 34;

/// What the fake saw during one step.
#[derive(Debug, Clone, Default)]
pub struct StepTally {
    /// Distinct sequence numbers accepted (2xx and not returned as unprocessed).
    pub delivered: u64,
    /// Distinct sequence numbers returned as unprocessed and never delivered.
    pub unprocessed: u64,
    /// Deliveries of a sequence number already delivered.
    pub duplicates: u64,
    /// Documents of another step (a previous daemon's leftovers).
    pub stale: u64,
    /// Documents whose id could not be read.
    pub unreadable: u64,
    /// Documents received in any request, including refused ones.
    pub documents: u64,
    /// Delivery latency of each first delivery, in µs, ascending.
    pub latencies_us: Vec<u32>,
    pub requests_ok: u64,
    pub requests_500: u64,
    pub requests_429: u64,
    /// Requests that were not a readable `PutTraceSegments` (answered 400 or 404).
    pub requests_bad: u64,
    pub telemetry: u64,
    /// TCP connections accepted (few means the daemon keeps them alive).
    pub connections: u64,
}

struct Tally {
    step: u16,
    delivered: Vec<u64>,
    unprocessed: Vec<u64>,
    /// Sequence numbers that reached a final state (delivered or unprocessed) at least once.
    settled: u64,
    last_change: Instant,
    t: StepTally,
}

impl Tally {
    fn new(step: u16) -> Self {
        Tally {
            step,
            delivered: Vec::new(),
            unprocessed: Vec::new(),
            settled: 0,
            last_change: Instant::now(),
            t: StepTally::default(),
        }
    }
}

/// Sets bit `i`; returns whether it was set before.
fn set_bit(bits: &mut Vec<u64>, i: u64) -> bool {
    let (w, b) = ((i / 64) as usize, i % 64);
    if w >= bits.len() {
        bits.resize((w + 1).next_power_of_two(), 0);
    }
    let was = bits[w] >> b & 1 == 1;
    bits[w] |= 1 << b;
    was
}

fn get_bit(bits: &[u64], i: u64) -> bool {
    bits.get((i / 64) as usize)
        .is_some_and(|w| w >> (i % 64) & 1 == 1)
}

struct Shared {
    tally: Mutex<Tally>,
    stop: AtomicBool,
    faults: Faults,
    cpus: Vec<usize>,
    streams: Mutex<Vec<TcpStream>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake. Stops on drop.
pub struct FastXray {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FastXray {
    /// Listens on `127.0.0.1:port` (0 = any free port); connection threads pin themselves to
    /// `cpus` when it is not empty.
    pub fn start(port: u16, faults: Faults, cpus: Vec<usize>) -> io::Result<FastXray> {
        Self::start_with(port, faults, cpus, None)
    }

    /// Like [`FastXray::start`], serving HTTPS with a self-signed certificate for `127.0.0.1`
    /// and `localhost`, made now.
    pub fn start_https(port: u16, faults: Faults, cpus: Vec<usize>) -> io::Result<FastXray> {
        Self::start_with(port, faults, cpus, Some(self_signed_tls()?))
    }

    fn start_with(
        port: u16,
        faults: Faults,
        cpus: Vec<usize>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<FastXray> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            tally: Mutex::new(Tally::new(0)),
            stop: AtomicBool::new(false),
            faults,
            cpus,
            streams: Mutex::new(Vec::new()),
            tls,
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("bench-fake-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(FastXray {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The base URL to give the daemon (`https://` when serving HTTPS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// Forgets everything and starts counting documents of `step`.
    pub fn begin_step(&self, step: u16) {
        *self.shared.lock() = Tally::new(step);
    }

    /// Sequence numbers settled (delivered or unprocessed) so far, and when that last changed.
    pub fn progress(&self) -> (u64, Instant) {
        let t = self.shared.lock();
        (t.settled, t.last_change)
    }

    /// The step's counts so far (latencies sorted).
    pub fn tally(&self) -> StepTally {
        let t = self.shared.lock();
        let mut out = t.t.clone();
        out.unprocessed = t
            .unprocessed
            .iter()
            .enumerate()
            .map(|(w, &u)| (u & !t.delivered.get(w).copied().unwrap_or(0)).count_ones() as u64)
            .sum();
        drop(t);
        out.latencies_us.sort_unstable();
        out
    }
}

impl Drop for FastXray {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for s in self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    if !shared.cpus.is_empty() {
        let _ = pin_current_thread(&shared.cpus);
    }
    let mut n: u64 = 0;
    for stream in listener.incoming() {
        if shared.stop.load(Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        n += 1;
        shared.lock().t.connections += 1;
        if let Ok(clone) = stream.try_clone() {
            let mut list = shared.streams.lock().unwrap_or_else(|e| e.into_inner());
            list.retain(|s| s.peer_addr().is_ok());
            list.push(clone);
        }
        let s = shared.clone();
        let seed = s.faults.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let _ = std::thread::Builder::new()
            .name(format!("bench-fake-{n}"))
            .spawn(move || {
                if !s.cpus.is_empty() {
                    let _ = pin_current_thread(&s.cpus);
                }
                let _ = stream.set_nodelay(true);
                let rng = Rng::new(seed);
                match &s.tls {
                    None => {
                        if let Ok(read_half) = stream.try_clone() {
                            let _ = serve(read_half, stream, &s, rng);
                        }
                    }
                    Some(cfg) => {
                        let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) else {
                            return;
                        };
                        let tls = Rc::new(RefCell::new(rustls::StreamOwned::new(conn, stream)));
                        let _ = serve(Half(tls.clone()), Half(tls.clone()), &s, rng);
                        let mut tls = tls.borrow_mut();
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                }
            });
    }
}

/// xorshift64*: cheap, seedable, good enough for fault draws.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A TLS server configuration (ring, TLS 1.2 and 1.3) with a certificate for `127.0.0.1` and
/// `localhost` made now, signed by itself.
fn self_signed_tls() -> io::Result<Arc<rustls::ServerConfig>> {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let cert = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    Ok(Arc::new(config))
}

/// One side of a stream that a connection thread both reads (through a buffer) and writes: a TLS
/// stream, whose state the two sides share.
struct Half<S>(Rc<RefCell<S>>);

impl<S: Read> Read for Half<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl<S: Write> Write for Half<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// Answers the requests of one connection, read from `reader` and answered on `writer` (two
/// handles of one TCP stream, or the two halves of a TLS stream) until it closes.
fn serve(
    reader: impl Read,
    mut writer: impl Write,
    shared: &Shared,
    mut rng: Rng,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(128 * 1024, reader);
    let mut req = HttpRequest::default();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut body = String::with_capacity(4096);
    let mut docs: Vec<(u64, Option<u64>)> = Vec::with_capacity(64);
    loop {
        let (status, error_type, close) =
            match read_http_request_into(&mut reader, &mut writer, &mut req) {
                Ok(true) if shared.stop.load(Relaxed) => return Ok(()),
                Ok(true) => {
                    let answer = match (req.method.as_str(), req.path.as_str()) {
                        ("POST", "/TraceSegments") => {
                            put_trace_segments(&req.body, shared, &mut rng, &mut docs, &mut body)
                        }
                        ("POST", "/TelemetryRecords") => {
                            shared.lock().t.telemetry += 1;
                            body.clear();
                            body.push_str("{}");
                            (200, None)
                        }
                        _ => {
                            shared.lock().t.requests_bad += 1;
                            error_body(&mut body, "UnknownOperationException", "unknown path");
                            (404, Some("UnknownOperationException"))
                        }
                    };
                    (answer.0, answer.1, req.wants_close())
                }
                Ok(false) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Other => {
                    error_body(&mut body, "BadRequest", &e.to_string());
                    (400, Some("BadRequest"), true)
                }
                Err(_) => return Ok(()),
            };
        let head = ResponseHead {
            code: status,
            content_type: "application/x-amz-json-1.1",
            request_id: "bench",
            error_type,
            close,
        };
        write_answer(
            &mut writer,
            &mut out,
            SystemTime::now(),
            &head,
            body.as_bytes(),
        )?;
        if close {
            return Ok(());
        }
    }
}

/// An AWS error body: `{"__type":..,"message":..}`.
fn error_body(out: &mut String, error_type: &str, message: &str) {
    out.clear();
    out.push_str(&serde_json::json!({ "__type": error_type, "message": message }).to_string());
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Handles one PutTraceSegments body: the answer's status and error type, its body in `json`.
fn put_trace_segments(
    body: &[u8],
    shared: &Shared,
    rng: &mut Rng,
    docs: &mut Vec<(u64, Option<u64>)>,
    json: &mut String,
) -> (u16, Option<&'static str>) {
    docs.clear();
    let mut unreadable = 0u64;
    let parsed = segment::for_each_document(body, |d| match segment::document_fields(d) {
        Some(f) => docs.push(f),
        None => unreadable += 1,
    });
    let f = &shared.faults;
    if !f.delay.is_zero() {
        std::thread::sleep(f.delay);
    }
    let n_docs = docs.len() as u64 + unreadable;
    if let Err(e) = parsed {
        let mut t = shared.lock();
        t.t.requests_bad += 1;
        drop(t);
        error_body(json, "InvalidRequestException", e);
        return (400, Some("InvalidRequestException"));
    }
    let draw = rng.unit();
    let refusal = if draw < f.p500 {
        Some((500, "InternalFailure", "fake internal failure"))
    } else if draw < f.p500 + f.p429 {
        Some((429, "ThrottledException", "Rate exceeded"))
    } else {
        None
    };
    if let Some((status, error_type, message)) = refusal {
        let mut t = shared.lock();
        if status == 500 {
            t.t.requests_500 += 1;
        } else {
            t.t.requests_429 += 1;
        }
        t.t.documents += n_docs;
        drop(t);
        error_body(json, error_type, message);
        return (status, Some(error_type));
    }
    json.clear();
    json.push_str("{\"UnprocessedTraceSegments\":[");
    let mut first = true;
    let now = now_us();
    let mut t = shared.lock();
    t.t.requests_ok += 1;
    t.t.documents += n_docs;
    t.t.unreadable += unreadable;
    let mut changed = false;
    for &(id, start) in docs.iter() {
        let (step, seq) = split_id(id);
        if step != t.step {
            t.t.stale += 1;
            continue;
        }
        if seq >= MAX_SEQ {
            t.t.unreadable += 1;
            continue;
        }
        if f.p_unprocessed > 0.0 && rng.unit() < f.p_unprocessed {
            let mut hex = [0u8; 16];
            hex16(id, &mut hex);
            if !first {
                json.push(',');
            }
            first = false;
            json.push_str("{\"Id\":\"");
            json.push_str(std::str::from_utf8(&hex).unwrap_or_default());
            json.push_str("\",\"ErrorCode\":\"InvalidSegment\",\"Message\":\"fake unprocessed\"}");
            let was = set_bit(&mut t.unprocessed, seq);
            if !was && !get_bit(&t.delivered, seq) {
                t.settled += 1;
                changed = true;
            }
            continue;
        }
        if set_bit(&mut t.delivered, seq) {
            t.t.duplicates += 1;
            continue;
        }
        t.t.delivered += 1;
        if !get_bit(&t.unprocessed, seq) {
            t.settled += 1;
        }
        changed = true;
        if let Some(s) = start {
            let lat = now.saturating_sub(s).min(u64::from(u32::MAX));
            t.t.latencies_us.push(lat as u32);
        }
    }
    if changed {
        t.last_change = Instant::now();
    }
    drop(t);
    json.push_str("]}");
    (200, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_segment::{HEADER, Template, format_epoch_us, make_id};
    use std::io::{BufRead, Read, Write};

    #[test]
    fn bits() {
        let mut v = Vec::new();
        assert!(!set_bit(&mut v, 1000));
        assert!(set_bit(&mut v, 1000));
        assert!(get_bit(&v, 1000) && !get_bit(&v, 999) && !get_bit(&v, 1 << 40));
    }

    fn body(step: u16, seqs: &[u64]) -> Vec<u8> {
        let t = Template::new(600).unwrap();
        let mut out = b"{\"TraceSegmentDocuments\":[".to_vec();
        for (i, &s) in seqs.iter().enumerate() {
            let mut d = t.bytes.clone();
            t.patch(&mut d, make_id(step, s), &format_epoch_us(now_us()));
            if i > 0 {
                out.push(b',');
            }
            let doc = std::str::from_utf8(&d[HEADER.len()..]).unwrap();
            out.extend_from_slice(serde_json::to_string(doc).unwrap().as_bytes());
        }
        out.extend_from_slice(b"]}");
        out
    }

    fn post(c: &mut std::io::BufReader<TcpStream>, path: &str, body: &[u8]) -> (u16, String) {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        c.get_mut().write_all(&req).unwrap();
        let mut status = String::new();
        c.read_line(&mut status).unwrap();
        let mut len = 0;
        loop {
            let mut l = String::new();
            c.read_line(&mut l).unwrap();
            if l == "\r\n" {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        c.read_exact(&mut b).unwrap();
        (
            status.split(' ').nth(1).unwrap().parse().unwrap(),
            String::from_utf8(b).unwrap(),
        )
    }

    #[test]
    fn counts_distinct_deliveries_duplicates_and_stale_documents() {
        let fake = FastXray::start(0, Faults::default(), vec![]).unwrap();
        fake.begin_step(2);
        let mut c = std::io::BufReader::new(TcpStream::connect(fake.addr).unwrap());
        let (status, answer) = post(&mut c, "/TraceSegments", &body(2, &[0, 1, 2]));
        assert_eq!(
            (status, answer.as_str()),
            (200, "{\"UnprocessedTraceSegments\":[]}")
        );
        assert_eq!(post(&mut c, "/TraceSegments", &body(2, &[2, 3])).0, 200);
        assert_eq!(post(&mut c, "/TraceSegments", &body(1, &[4])).0, 200);
        assert_eq!(post(&mut c, "/TelemetryRecords", b"{}").0, 200);
        assert_eq!(post(&mut c, "/Nope", b"{}").0, 404);
        assert_eq!(post(&mut c, "/TraceSegments", b"[]").0, 400);
        let t = fake.tally();
        assert_eq!((t.delivered, t.duplicates, t.stale), (4, 1, 1));
        assert_eq!((t.requests_ok, t.telemetry, t.requests_bad), (3, 1, 2));
        assert_eq!(t.latencies_us.len(), 4);
        assert_eq!(t.connections, 1);
        assert_eq!(fake.progress().0, 4);
    }

    #[test]
    fn injects_faults_by_fraction() {
        let faults = Faults {
            p500: 0.25,
            p429: 0.25,
            p_unprocessed: 0.1,
            delay: Duration::from_millis(1),
            seed: 7,
        };
        let fake = FastXray::start(0, faults, vec![]).unwrap();
        fake.begin_step(0);
        let mut c = std::io::BufReader::new(TcpStream::connect(fake.addr).unwrap());
        let mut statuses = [0u32; 3];
        let mut unprocessed_ids = 0;
        for i in 0..200u64 {
            let (status, answer) = post(&mut c, "/TraceSegments", &body(0, &[2 * i, 2 * i + 1]));
            match status {
                200 => {
                    statuses[0] += 1;
                    unprocessed_ids += answer.matches("\"Id\"").count();
                }
                500 => statuses[1] += 1,
                429 => statuses[2] += 1,
                s => panic!("status {s}"),
            }
        }
        assert!(statuses.iter().all(|&n| n > 20), "{statuses:?}");
        let t = fake.tally();
        assert_eq!(t.requests_ok, u64::from(statuses[0]));
        assert_eq!(t.requests_500, u64::from(statuses[1]));
        assert_eq!(t.unprocessed, unprocessed_ids as u64);
        assert!(unprocessed_ids > 0);
        assert_eq!(t.delivered + t.unprocessed, 2 * u64::from(statuses[0]));
        assert_eq!(t.documents, 400);
    }
}

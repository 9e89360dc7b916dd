//! Support for the config-file, logging and telemetry tests: run the real xrayd binary with
//! captured output, a scratch directory, UDP senders, and a scriptable loopback fake of X-Ray
//! (PutTraceSegments, PutTelemetryRecords) and of EC2 instance metadata, written with std only.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIDTELEMETRYTEST";
pub const SECRET_KEY: &str = "telemetry/Test+Secret0123456789EXAMPLE";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_xrayd")
}

/// A scratch directory, removed on drop (kept when the test fails).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xrayd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn file(&self, name: &str) -> String {
        self.join(name).to_string_lossy().into_owned()
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.join(name);
        std::fs::write(&p, text).expect("write file");
        p.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A command for the binary with a clean environment: HOME and the working directory are `cwd`,
/// no AWS files, instance metadata disabled; then `envs` (a value of "" removes the variable).
pub fn command(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cwd)
        .env("AWS_CONFIG_FILE", cwd.join("no-such-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            cwd.join("no-such-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TZ", "UTC")
        .current_dir(cwd)
        .stdin(Stdio::null());
    for (k, v) in envs {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// What a short run printed.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion (it must exit within 20 s).
pub fn run(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Ran {
    let mut child = command(cwd, args, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xrayd");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("xrayd {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code: status.code(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running xrayd whose output lines are collected; killed on drop.
pub struct Daemon {
    child: Child,
    lines: Lines,
    readers: Vec<JoinHandle<()>>,
    /// stdout, when the test asked to leave it unread.
    pub unread_stdout: Option<ChildStdout>,
    exit: Option<ExitStatus>,
}

fn reader(src: impl Read + Send + 'static, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    if std::env::var_os("XRAYD_TEST_ECHO").is_some() {
                        eprintln!("[xrayd] {line}");
                    }
                    let (m, c) = &*lines;
                    m.lock().unwrap().push(line);
                    c.notify_all();
                }
            }
        }
    })
}

impl Daemon {
    pub fn spawn(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Self::spawn_with(cwd, args, envs, true)
    }

    /// `read_stdout: false` leaves stdout piped and never read (a stalled log consumer).
    pub fn spawn_with(
        cwd: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        read_stdout: bool,
    ) -> Daemon {
        let mut child = command(cwd, args, envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn xrayd");
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut readers = vec![reader(child.stderr.take().unwrap(), lines.clone())];
        let mut unread_stdout = None;
        if read_stdout {
            readers.push(reader(child.stdout.take().unwrap(), lines.clone()));
        } else {
            unread_stdout = child.stdout.take();
        }
        Daemon {
            child,
            lines,
            readers,
            unread_stdout,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    pub fn log(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until `pred` holds on the lines.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, c) = &*self.lines;
        let mut g = m.lock().unwrap();
        loop {
            if pred(&g) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            g = c
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(50)))
                .unwrap()
                .0;
        }
    }

    /// The first line containing `s` (waits up to `timeout`; panics with the log otherwise).
    pub fn line(&self, s: &str, timeout: Duration) -> String {
        let mut found = None;
        self.wait_for(timeout, |lines| lines.iter().any(|l| l.contains(s)));
        if let Some(l) = self.lines().iter().find(|l| l.contains(s)) {
            found = Some(l.clone());
        }
        found.unwrap_or_else(|| panic!("no line containing {s:?}; output:\n{}", self.log()))
    }

    pub fn count(&self, s: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(s)).count()
    }

    /// The UDP address from `Listening for segments on UDP <addr>`.
    pub fn udp_addr(&self) -> SocketAddr {
        let line = self.line("Listening for segments on UDP ", Duration::from_secs(10));
        let rest = &line[line.find("on UDP ").unwrap() + 7..];
        let word = rest.split_whitespace().next().unwrap();
        word.trim_end_matches(['"', '}', ','])
            .parse()
            .expect("udp address")
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0);
    }

    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.exit {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exit = Some(s);
                for h in self.readers.drain(..) {
                    let _ = h.join();
                }
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "xrayd did not exit within {timeout:?}; output:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of the daemon's UDP socket, read from `/proc` once the socket exists (`None`
    /// if the daemon exits or `timeout` passes first). Needs no log line, unlike
    /// [`Daemon::udp_addr`].
    pub fn udp_socket(&mut self, timeout: Duration) -> Option<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = udp_socket_of(self.pid()) {
                return Some(addr);
            }
            if !self.is_running() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status. The daemon installs its signal handlers before it opens
    /// its UDP socket, and a SIGTERM before that would kill it: wait for the socket first.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = self.udp_socket(Duration::from_secs(10));
        if self.is_running() {
            self.sigterm();
        }
        self.wait_exit(Duration::from_secs(20))
    }

    /// Counters of the `Final counts: k=v ...` line.
    pub fn final_counts(&self) -> HashMap<String, u64> {
        let line = self.line("Final counts:", Duration::from_secs(10));
        let rest = &line[line.find("Final counts:").unwrap() + 13..];
        rest.split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((
                    k.to_string(),
                    v.trim_end_matches(['"', '}', ',']).parse().ok()?,
                ))
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.unread_stdout.take();
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
        if std::thread::panicking() {
            let lines = self.lines();
            let skip = lines.len().saturating_sub(200);
            eprintln!("---- xrayd output (last {} lines) ----", lines.len() - skip);
            for l in &lines[skip..] {
                eprintln!("{l}");
            }
        }
    }
}

/// `-b 127.0.0.1:0 -t 127.0.0.1:0 --local-sink <sink>` followed by `extra`.
pub fn local_sink_args<'a>(sink: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-b",
        "127.0.0.1:0",
        "-t",
        "127.0.0.1:0",
        "--local-sink",
        sink,
    ];
    a.extend_from_slice(extra);
    a
}

/// Polls the file at `path` (10 s at most) until `pred` holds for its text, and returns it.
pub fn wait_for_file(path: &str, pred: impl Fn(&str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: {path}: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A valid segment document of about `size` bytes.
pub fn segment(i: u64, size: usize) -> String {
    let head = format!(
        "{{\"trace_id\":\"1-5759e988-bd862e3fe1be46a9{i:08x}\",\"id\":\"{i:016x}\",\"name\":\"svc\",\"start_time\":1.0,\"end_time\":2.0,\"pad\":\""
    );
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The datagram an SDK sends for `doc`.
pub fn datagram(doc: &str) -> Vec<u8> {
    format!("{{\"format\": \"json\", \"version\": 1}}\n{doc}").into_bytes()
}

/// Sends datagrams to `to`, pausing `gap` between them.
pub fn send(to: SocketAddr, datagrams: &[Vec<u8>], gap: Duration) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    for d in datagrams {
        s.send_to(d, to).expect("send datagram");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
}

/// How the fake answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with an empty result (`{"UnprocessedTraceSegments":[]}` for segments).
    Ok,
    /// This status with an AWS-style error body (`__type` from the status).
    Status(u16),
    /// Answers 200 only after this long (longer than the client's timeout: a timeout).
    Delay(Duration),
}

/// One request the fake got.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    pub reply: Reply,
    /// Documents in a PutTraceSegments body.
    pub documents: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Default)]
struct State {
    segments_script: VecDeque<Reply>,
    segments_default: Option<Reply>,
    telemetry_default: Option<Reply>,
    segments: Vec<Request>,
    telemetry: Vec<Request>,
    other: Vec<Request>,
    metadata: HashMap<String, String>,
}

/// A loopback fake of X-Ray (and of EC2 instance metadata) that can be taken down and brought
/// back on the same port.
pub struct Fake {
    addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Fake {
    pub fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = listener.local_addr().unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (state, up, stop) = (state.clone(), up.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(Some(listener), addr, state, up, stop))
        };
        Fake {
            addr,
            state,
            up,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening: connections are refused until [`Fake::up`].
    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        // The acceptor drops its listener within a few milliseconds.
        std::thread::sleep(Duration::from_millis(30));
    }

    /// Listens again on the same port.
    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(2);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "fake did not come back up");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn script_segments(&self, replies: &[Reply]) {
        self.state.0.lock().unwrap().segments_script = replies.iter().cloned().collect();
    }

    pub fn segments_default(&self, r: Reply) {
        self.state.0.lock().unwrap().segments_default = Some(r);
    }

    pub fn telemetry_default(&self, r: Reply) {
        self.state.0.lock().unwrap().telemetry_default = Some(r);
    }

    pub fn set_metadata(&self, path: &str, value: &str) {
        self.state
            .0
            .lock()
            .unwrap()
            .metadata
            .insert(path.to_string(), value.to_string());
    }

    pub fn segment_requests(&self) -> Vec<Request> {
        self.state.0.lock().unwrap().segments.clone()
    }

    pub fn telemetry_requests(&self) -> Vec<Request> {
        self.state.0.lock().unwrap().telemetry.clone()
    }

    pub fn other_requests(&self) -> Vec<Request> {
        self.state.0.lock().unwrap().other.clone()
    }

    /// Documents answered with 200.
    pub fn delivered(&self) -> usize {
        self.state
            .0
            .lock()
            .unwrap()
            .segments
            .iter()
            .filter(|r| r.reply == Reply::Ok)
            .map(|r| r.documents)
            .sum()
    }

    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Fake) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let g = self.state.0.lock().unwrap();
            let _ = self
                .state
                .1
                .wait_timeout(g, Duration::from_millis(20))
                .unwrap();
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    if let Some(l) = &listener {
        l.set_nonblocking(true).unwrap();
    }
    while !stop.load(Ordering::SeqCst) {
        let want_up = up.load(Ordering::SeqCst);
        if !want_up && listener.is_some() {
            listener = None;
        } else if want_up && listener.is_none() {
            match TcpListener::bind(addr) {
                Ok(l) => {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            }
        }
        match listener.as_ref().map(|l| l.accept()) {
            Some(Ok((stream, _))) => {
                let state = state.clone();
                std::thread::spawn(move || serve(stream, state));
            }
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Method, path, headers, body.
type RawRequest = (String, String, Vec<(String, String)>, Vec<u8>);

fn read_request(stream: &mut TcpStream) -> Option<RawRequest> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

fn serve(mut stream: TcpStream, state: Arc<(Mutex<State>, Condvar)>) {
    let Some((method, path, headers, body)) = read_request(&mut stream) else {
        return;
    };
    let route = path.split('?').next().unwrap_or("").to_string();
    let (reply, answer, documents) = {
        let mut st = state.0.lock().unwrap();
        match route.as_str() {
            "/TraceSegments" => {
                let reply = st
                    .segments_script
                    .pop_front()
                    .or_else(|| st.segments_default.clone())
                    .unwrap_or(Reply::Ok);
                let docs = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["TraceSegmentDocuments"].as_array().map(|a| a.len()))
                    .unwrap_or(0);
                (
                    reply,
                    r#"{"UnprocessedTraceSegments":[]}"#.to_string(),
                    docs,
                )
            }
            "/TelemetryRecords" => (
                st.telemetry_default.clone().unwrap_or(Reply::Ok),
                "{}".to_string(),
                0,
            ),
            "/latest/api/token" if method == "PUT" => (Reply::Ok, "fake-token".to_string(), 0),
            p if p.starts_with("/latest/meta-data/") => {
                let key = p.trim_start_matches("/latest/meta-data/");
                match st.metadata.get(key) {
                    Some(v) => (Reply::Ok, v.clone(), 0),
                    None => (Reply::Status(404), String::new(), 0),
                }
            }
            _ => (Reply::Status(404), String::new(), 0),
        }
    };
    let req = Request {
        method,
        path: route.clone(),
        headers,
        body,
        at: Instant::now(),
        reply: reply.clone(),
        documents,
    };
    {
        let mut st = state.0.lock().unwrap();
        match route.as_str() {
            "/TraceSegments" => st.segments.push(req),
            "/TelemetryRecords" => st.telemetry.push(req),
            _ => st.other.push(req),
        }
        state.1.notify_all();
    }
    let (status, body, kind) = match reply {
        Reply::Ok => (200, answer, None),
        Reply::Delay(d) => {
            std::thread::sleep(d);
            (200, answer, None)
        }
        Reply::Status(code) => {
            let kind = match code {
                429 => "ThrottledException",
                400..=499 => "InvalidRequestException",
                _ => "InternalFailure",
            };
            (
                code,
                format!(r#"{{"__type":"{kind}","message":"fake {code}"}}"#),
                Some(kind),
            )
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(k) = kind {
        head.push_str(&format!("x-amzn-ErrorType: {k}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}

/// Sums of the records of PutTelemetryRecords bodies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub records: usize,
    pub received: u64,
    pub sent: u64,
    pub spillover: u64,
    pub rejected: u64,
    pub timeout: u64,
    pub refused: u64,
    pub http4xx: u64,
    pub http5xx: u64,
    pub unknown_host: u64,
    pub other: u64,
}

impl Totals {
    pub fn add_record(&mut self, r: &serde_json::Value) {
        let n = |v: &serde_json::Value| v.as_u64().expect("a count");
        let e = &r["BackendConnectionErrors"];
        self.records += 1;
        self.received += n(&r["SegmentsReceivedCount"]);
        self.sent += n(&r["SegmentsSentCount"]);
        self.spillover += n(&r["SegmentsSpilloverCount"]);
        self.rejected += n(&r["SegmentsRejectedCount"]);
        self.timeout += n(&e["TimeoutCount"]);
        self.refused += n(&e["ConnectionRefusedCount"]);
        self.http4xx += n(&e["HTTPCode4XXCount"]);
        self.http5xx += n(&e["HTTPCode5XXCount"]);
        self.unknown_host += n(&e["UnknownHostCount"]);
        self.other += n(&e["OtherCount"]);
    }

    /// The sums over every record of these requests (answered 200 only: failed calls are resent).
    pub fn of(requests: &[Request]) -> Totals {
        let mut t = Totals::default();
        for req in requests.iter().filter(|r| r.reply == Reply::Ok) {
            for r in req.json()["TelemetryRecords"].as_array().expect("records") {
                t.add_record(r);
            }
        }
        t
    }
}

/// The first UDP socket (IPv4 or IPv6) among `pid`'s open files, as a loopback address with its
/// port.
fn udp_socket_of(pid: u32) -> Option<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .collect();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(table) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in table.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() > 9 && inodes.iter().any(|i| i == cols[9]) {
                let port = u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok()?;
                return Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
    }
    None
}

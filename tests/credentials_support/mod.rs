//! Support for the credentials tests: a loopback HTTP fake (std only), temp dirs, an injected
//! environment, form decoding, fake STS answers and bounded waits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body as a form (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> HashMap<String, String> {
        form_decode(&self.text())
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: content_type.to_string(),
            body: body.into(),
        }
    }
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain", body)
    }
    pub fn json(status: u16, body: &str) -> Response {
        Response::new(status, "application/json", body)
    }
    pub fn xml(status: u16, body: &str) -> Response {
        Response::new(status, "text/xml", body)
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A loopback HTTP/1.1 server: one request per connection (`connection: close`), every request
/// recorded. Stopped and joined on drop.
pub struct FakeServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let requests = requests.clone();
                            let handler = handler.clone();
                            std::thread::spawn(move || serve(stream, &requests, &*handler));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        FakeServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&Request) -> bool) -> usize {
        self.requests().iter().filter(|r| pred(r)).count()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, requests: &Mutex<Vec<Request>>, handler: &Handler) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    requests.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let reason = match resp.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        resp.status,
        resp.content_type,
        resp.body.len()
    )
    .into_bytes();
    out.extend_from_slice(&resp.body);
    let mut w = stream;
    let _ = w.write_all(&out);
    let _ = w.flush();
}

/// Decodes `a=b&c=d%20e` (`+` as space).
pub fn form_decode(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3339 (UTC, seconds) of now + `secs`.
pub fn rfc3339_in(secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = jiff::Timestamp::from_second(now + secs).unwrap();
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An STS success answer for `action` (`AssumeRole` / `AssumeRoleWithWebIdentity`).
pub fn sts_ok(action: &str, key: &str, secret: &str, token: &str, expires_in: i64) -> Response {
    let exp = rfc3339_in(expires_in);
    Response::xml(
        200,
        &format!(
            "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <{action}Result>\n    <Credentials>\n      <AccessKeyId>{key}</AccessKeyId>\n      <SecretAccessKey>{secret}</SecretAccessKey>\n      <SessionToken>{token}</SessionToken>\n      <Expiration>{exp}</Expiration>\n    </Credentials>\n    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>\n  </{action}Result>\n  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>\n</{action}Response>"
        ),
    )
}

/// An STS error answer.
pub fn sts_error(status: u16, code: &str, message: &str) -> Response {
    Response::xml(
        status,
        &format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>2</RequestId></ErrorResponse>"
        ),
    )
}

/// A container / IMDS style JSON credentials document.
pub fn creds_json(key: &str, secret: &str, token: &str, expires_in: i64) -> String {
    format!(
        "{{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"{key}\",\"SecretAccessKey\":\"{secret}\",\"Token\":\"{token}\",\"Expiration\":\"{}\",\"LastUpdated\":\"{}\"}}",
        rfc3339_in(expires_in),
        rfc3339_in(0)
    )
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("creds-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write temp file");
        p
    }
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An injected environment: only what the test sets. Profile files point nowhere and IMDS is
/// disabled unless the test sets them.
#[derive(Clone, Default)]
pub struct Env(pub HashMap<String, String>);

impl Env {
    /// The hermetic base: no HOME, no profile files, IMDS disabled.
    pub fn hermetic() -> Env {
        Env::default()
            .set("AWS_CONFIG_FILE", "/nonexistent/xrayd-creds-test/config")
            .set(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/xrayd-creds-test/credentials",
            )
            .set("AWS_EC2_METADATA_DISABLED", "true")
    }
    pub fn set(mut self, k: &str, v: &str) -> Env {
        self.0.insert(k.to_string(), v.to_string());
        self
    }
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`.
    pub fn web_identity(self, token_file: &Path, role_arn: &str) -> Env {
        self.set(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            &token_file.display().to_string(),
        )
        .set("AWS_ROLE_ARN", role_arn)
    }
    pub fn unset(mut self, k: &str) -> Env {
        self.0.remove(k);
        self
    }
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |k| self.0.get(k).cloned()
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `Credential=` key id of a SigV4 `Authorization` header.
pub fn auth_key_id(auth: &str) -> Option<String> {
    let cred = auth.split("Credential=").nth(1)?;
    Some(cred.split('/').next()?.to_string())
}

/// The credential scope (`date/region/service/aws4_request`) of a SigV4 `Authorization` header.
pub fn auth_scope(auth: &str) -> Option<String> {
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split(',').next()?;
    Some(cred.split_once('/')?.1.to_string())
}

/// Recomputes the SigV4 signature of a received request with `secret` (via xrayd's signer over
/// exactly the signed headers the request lists, at its `x-amz-date`) and compares the
/// `Authorization` headers.
pub fn signature_matches(req: &Request, key: &str, secret: &str, token: Option<&str>) -> bool {
    match signature_check(req, key, secret, token) {
        Ok(()) => true,
        Err(why) => {
            eprintln!("signature check failed: {why}");
            false
        }
    }
}

/// As [`signature_matches`], saying what differs.
pub fn signature_check(
    req: &Request,
    key: &str,
    secret: &str,
    token: Option<&str>,
) -> Result<(), String> {
    use xrayd::aws::credentials::Credentials;
    use xrayd::aws::sigv4::{Scope, sign_headers};
    let auth = req
        .header("authorization")
        .ok_or("no authorization header")?;
    let date = req.header("x-amz-date").ok_or("no x-amz-date header")?;
    let scope = auth_scope(auth).ok_or("no credential scope")?;
    let mut scope_parts = scope.split('/');
    let (_, region, service) = (
        scope_parts.next(),
        scope_parts.next().unwrap_or("").to_string(),
        scope_parts.next().unwrap_or("").to_string(),
    );
    let service: &'static str = match service.as_str() {
        "sts" => "sts",
        "xray" => "xray",
        other => return Err(format!("service {other}")),
    };
    let time = jiff::Timestamp::strptime("%Y%m%dT%H%M%SZ%z", format!("{date}+0000"))
        .map_err(|e| format!("x-amz-date {date}: {e}"))?;
    let signed: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(|s| s.split(';').collect())
        .unwrap_or_default();
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .filter(|h| !matches!(**h, "x-amz-date" | "x-amz-security-token"))
        .filter_map(|h| req.header(h).map(|v| (*h, v)))
        .collect();
    let host = req.header("host").unwrap_or("");
    let url = format!("http://{host}{}", req.path);
    let creds = Credentials::new(key, secret, token.map(String::from), None, "test");
    let out = sign_headers(
        &req.method,
        &url,
        &headers,
        &req.body,
        &creds,
        &Scope { region, service },
        SystemTime::from(time),
    )
    .map_err(|e| e.to_string())?;
    let expected = out
        .iter()
        .find(|(k, _)| *k == "authorization")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if expected == auth {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {auth}"))
    }
}

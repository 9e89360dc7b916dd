//! The server side of HTTP/1.1 on the wire, for the fake AWS endpoints (the recording
//! [`FakeXray`](crate::FakeXray) and the counting [`FastXray`](crate::FastXray)): reading one
//! request (Content-Length or chunked body, `Expect: 100-continue`), fresh or into a reused
//! [`HttpRequest`], and writing one answer (with the `Date`, `x-amzn-RequestId` and
//! `x-amzn-ErrorType` headers AWS services send).

use super::sigv4::header;
use std::io::{BufRead, Read, Write};
use std::time::SystemTime;

/// A parsed HTTP/1.1 request.
#[derive(Debug, Default)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
    /// Sent as HTTP/1.0 (whose connections close after each answer unless kept alive).
    pub http10: bool,
}

impl HttpRequest {
    /// Whether the client asked for the connection to end after the answer: `Connection: close`,
    /// or HTTP/1.0 without `Connection: keep-alive`.
    pub fn wants_close(&self) -> bool {
        match header(&self.headers, "connection").map(str::to_ascii_lowercase) {
            Some(v) if v.contains("close") => true,
            Some(v) if v.contains("keep-alive") => false,
            _ => self.http10,
        }
    }
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
    let mut req = HttpRequest::default();
    Ok(read_http_request_into(r, w, &mut req)?.then_some(req))
}

/// Reads one request into `req`, reusing its buffers (the body's above all): the fast fake's
/// path, one allocation-free body per request. `Ok(false)` on a clean EOF between requests.
pub fn read_http_request_into(
    r: &mut impl BufRead,
    w: &mut impl Write,
    req: &mut HttpRequest,
) -> std::io::Result<bool> {
    let line = loop {
        match read_line(r)? {
            None => return Ok(false),
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
    req.method.clear();
    req.method.push_str(method);
    req.path.clear();
    req.path.push_str(path);
    req.query.clear();
    req.query.push_str(query);
    req.http10 = version == "HTTP/1.0";
    req.headers.clear();
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
        req.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    let headers = &req.headers;
    if header(headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    req.chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = &mut req.body;
    body.clear();
    if req.chunked {
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
    } else if let Some(cl) = header(headers, "content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad content-length {cl:?}")))?;
        if n > MAX_BODY {
            return Err(std::io::Error::other("body too large"));
        }
        body.resize(n, 0);
        r.read_exact(body)?;
    }
    Ok(true)
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// What goes into an answer's head besides its body.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub code: u16,
    pub content_type: &'a str,
    pub request_id: &'a str,
    /// `x-amzn-ErrorType`, when the answer is an AWS error.
    pub error_type: Option<&'a str>,
    /// Adds `Connection: close`: the connection ends after this answer.
    pub close: bool,
}

/// Writes one answer: status line, `Date` (the fake's clock), `Content-Type`, `Content-Length`,
/// `x-amzn-RequestId`, `x-amzn-ErrorType` when the body is JSON with a `__type`, and
/// `Connection: close` when the connection ends after it.
pub(crate) fn write_response(
    w: &mut impl Write,
    now: SystemTime,
    code: u16,
    content_type: &str,
    body: &[u8],
    request_id: &str,
    close: bool,
) -> std::io::Result<()> {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    let error_type = json
        .as_ref()
        .and_then(|v| v.as_object()?.get("__type")?.as_str());
    let head = ResponseHead {
        code,
        content_type,
        request_id,
        error_type,
        close,
    };
    write_answer(w, &mut Vec::new(), now, &head, body)
}

/// Writes one answer as [`write_response`] does, with the error type given rather than read from
/// the body, assembled in `out` (a buffer the caller reuses) and written with one call.
pub fn write_answer(
    w: &mut impl Write,
    out: &mut Vec<u8>,
    now: SystemTime,
    head: &ResponseHead<'_>,
    body: &[u8],
) -> std::io::Result<()> {
    let date = jiff::Timestamp::try_from(now)
        .ok()
        .and_then(|t| {
            jiff::fmt::rfc2822::DateTimePrinter::new()
                .timestamp_to_rfc9110_string(&t)
                .ok()
        })
        .unwrap_or_default();
    out.clear();
    write!(
        out,
        "HTTP/1.1 {} {}\r\nDate: {date}\r\nContent-Type: {}\r\nContent-Length: {}\r\nx-amzn-RequestId: {}\r\n",
        head.code,
        reason(head.code),
        head.content_type,
        body.len(),
        head.request_id,
    )?;
    if let Some(t) = head.error_type {
        write!(out, "x-amzn-ErrorType: {t}\r\n")?;
    }
    if head.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn reads_requests_into_a_reused_buffer() {
        let wire: &[u8] = b"POST /TraceSegments?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nConnection: keep-alive\r\n\r\nbody\
GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n\
POST /x HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = BufReader::new(wire);
        let mut w = Vec::new();
        let mut req = HttpRequest::default();
        assert!(read_http_request_into(&mut r, &mut w, &mut req).unwrap());
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/TraceSegments")
        );
        assert_eq!(
            (req.query.as_str(), req.body.as_slice()),
            ("x=1", &b"body"[..])
        );
        assert!(!req.chunked && !req.wants_close() && w.is_empty());
        assert!(read_http_request_into(&mut r, &mut w, &mut req).unwrap());
        assert_eq!(req.body, b"hello world");
        assert!(req.chunked && req.http10 && req.wants_close());
        assert_eq!(w, b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(read_http_request_into(&mut r, &mut w, &mut req).unwrap());
        assert!(req.body.is_empty() && req.wants_close() && !req.http10);
        assert!(!read_http_request_into(&mut r, &mut w, &mut req).unwrap());
        let mut bad = BufReader::new(&b"POST / HTTP/1.1\r\nnocolon\r\n\r\n"[..]);
        assert!(read_http_request_into(&mut bad, &mut w, &mut req).is_err());
        let mut bad =
            BufReader::new(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..]);
        assert!(read_http_request(&mut bad, &mut w).is_err());
    }

    #[test]
    fn answers_carry_the_aws_headers() {
        let mut w = Vec::new();
        let body = br#"{"__type":"ThrottledException","message":"slow down"}"#;
        write_response(
            &mut w,
            SystemTime::UNIX_EPOCH,
            429,
            "application/json",
            body,
            "r1",
            true,
        )
        .unwrap();
        let text = String::from_utf8(w).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        for h in [
            "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
            "Content-Length: 53\r\n",
            "x-amzn-RequestId: r1\r\n",
            "x-amzn-ErrorType: ThrottledException\r\n",
            "Connection: close\r\n",
        ] {
            assert!(text.contains(h), "no {h:?} in {text}");
        }
        assert!(
            text.ends_with("\r\n\r\n{\"__type\":\"ThrottledException\",\"message\":\"slow down\"}")
        );
        let (mut w, mut out) = (Vec::new(), Vec::new());
        let head = ResponseHead {
            code: 200,
            content_type: "application/x-amz-json-1.1",
            request_id: "bench",
            error_type: None,
            close: false,
        };
        write_answer(&mut w, &mut out, SystemTime::now(), &head, b"{}").unwrap();
        let text = String::from_utf8(w).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\n{}"));
        assert!(
            !text.contains("ErrorType") && !text.contains("Connection"),
            "{text}"
        );
    }
}

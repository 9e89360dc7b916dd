//! The server side of HTTP/1.1 on the wire, for the fake AWS endpoint: reading one request
//! (Content-Length or chunked body, `Expect: 100-continue`) and writing one answer (with the
//! `Date`, `x-amzn-RequestId` and `x-amzn-ErrorType` headers AWS services send).

use super::sigv4::header;
use std::io::{BufRead, Read, Write};
use std::time::SystemTime;

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
    if let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(t) = m.get("__type").and_then(|t| t.as_str())
    {
        head.push_str(&format!("x-amzn-ErrorType: {t}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    w.write_all(&all)?;
    w.flush()
}

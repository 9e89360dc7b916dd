//! HTTP/1.1 request parsing and response encoding for the TCP port, as pure functions over
//! byte buffers (no I/O), so they can be unit-tested and fuzzed.
//!
//! A request is read in two steps: [`parse_head`] finds and checks the request line and headers
//! (with `httparse`), then [`parse_body`] takes the body that follows (`Content-Length` or
//! `chunked`). Both return `Ok(None)` while more bytes are needed. Anything the proxy does not
//! want to guess about is an error with the status to answer, after which the connection is
//! closed: both `Content-Length` and `Transfer-Encoding` (request smuggling), transfer codings
//! other than `chunked`, compressed bodies (`Content-Encoding`), unknown expectations.

use std::fmt;

/// Size limits of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line and headers, including the blank line.
    pub max_head: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Decoded body.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 64 * 1024,
        }
    }
}

impl Limits {
    /// Most raw bytes a chunked body may take on the wire (sizes, extensions, trailers included).
    /// The decoder refuses a body as soon as it is known to need more, so that a reader holding
    /// [`Limits::max_request`] bytes never waits for bytes it will not buffer.
    pub fn max_raw_body(&self) -> usize {
        self.max_body.saturating_mul(2).saturating_add(16 * 1024)
    }

    /// Most bytes one request (head and body) may take on the wire: a reader that buffered this
    /// much always gets a complete request or an error from the parser.
    pub fn max_request(&self) -> usize {
        self.max_head.saturating_add(self.max_raw_body())
    }
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    Empty,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// Origin-form target (`/path?query`), as sent; an absolute-form target
    /// (`http://host/path`) is reduced to its path and query.
    pub target: String,
    /// HTTP/1.1 (else HTTP/1.0).
    pub http11: bool,
    /// Bytes taken by the request line and headers, blank line included.
    pub len: usize,
    pub body: BodyKind,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An `Origin` header was sent (browsers send one with every `POST`).
    pub origin: bool,
    /// The `Content-Type` header, if any (the last one).
    pub content_type: Option<String>,
}

impl Head {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// A request that cannot be served; answered with [`HttpError::status`], then the connection
/// is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed request line, header or chunk framing.
    BadRequest(String),
    /// The request line and headers exceed [`Limits::max_head`] or [`Limits::max_headers`].
    HeadTooLarge,
    /// The body exceeds [`Limits::max_body`].
    BodyTooLarge { limit: usize },
    /// A transfer coding other than `chunked`.
    UnsupportedTransferEncoding(String),
    /// A `Content-Encoding` other than `identity`: the proxy forwards bodies untouched and
    /// signs what it sends, so it does not take compressed bodies.
    UnsupportedContentEncoding(String),
    /// An `Expect` other than `100-continue`.
    UnsupportedExpectation(String),
    /// Not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
}

impl HttpError {
    /// The status to answer.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedTransferEncoding(_) => 501,
            HttpError::UnsupportedContentEncoding(_) => 415,
            HttpError::UnsupportedExpectation(_) => 417,
            HttpError::UnsupportedVersion => 505,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::BadRequest(why) => write!(f, "bad request: {why}"),
            HttpError::HeadTooLarge => f.write_str("request line and headers are too large"),
            HttpError::BodyTooLarge { limit } => {
                write!(f, "request body is larger than the limit of {limit} bytes")
            }
            HttpError::UnsupportedTransferEncoding(te) => write!(
                f,
                "transfer-encoding {te:?} is not supported (only chunked)"
            ),
            HttpError::UnsupportedContentEncoding(ce) => write!(
                f,
                "content-encoding {ce:?} is not supported: send the body uncompressed"
            ),
            HttpError::UnsupportedExpectation(e) => {
                write!(f, "expectation {e:?} is not supported")
            }
            HttpError::UnsupportedVersion => {
                f.write_str("only HTTP/1.0 and HTTP/1.1 are supported")
            }
        }
    }
}

impl std::error::Error for HttpError {}

fn bad(why: impl Into<String>) -> HttpError {
    HttpError::BadRequest(why.into())
}

/// Splits a header value into its comma-separated, trimmed, non-empty elements.
fn elements(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// Parses the request line and headers at the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<Head>, HttpError> {
    // Like most servers, ignore blank lines before the request line (RFC 9112 §2.2).
    let skip = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    if skip == buf.len() {
        return if buf.len() > limits.max_head {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(None)
        };
    }
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(&buf[skip..]) {
        Ok(httparse::Status::Complete(n)) => skip + n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(HttpError::UnsupportedVersion),
        Err(e) => return Err(bad(e.to_string())),
    };
    if head_len > limits.max_head {
        return Err(HttpError::HeadTooLarge);
    }
    let method = req.method.unwrap_or_default().to_string();
    let http11 = req.version == Some(1);
    let target = origin_form(req.path.unwrap_or_default())?;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut origin = false;
    let mut content_type = None;
    for h in req.headers.iter() {
        let name = h.name;
        let value = std::str::from_utf8(h.value)
            .map_err(|_| bad(format!("header {name} is not valid UTF-8")))?
            .trim();
        if name.eq_ignore_ascii_case("content-length") {
            // `Content-Length: 5, 5` and repeated equal headers are tolerated; anything else is not.
            for e in value.split(',').map(str::trim) {
                if e.is_empty() || e.len() > 19 || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(format!("invalid content-length {value:?}")));
                }
                let n: u64 = e
                    .parse()
                    .map_err(|_| bad(format!("invalid content-length {value:?}")))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(bad("conflicting content-length headers"));
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let all = match transfer_encoding.take() {
                Some(prev) => format!("{prev}, {value}"),
                None => value.to_string(),
            };
            transfer_encoding = Some(all);
        } else if name.eq_ignore_ascii_case("connection") {
            for e in elements(value) {
                if e.eq_ignore_ascii_case("close") {
                    close = true;
                } else if e.eq_ignore_ascii_case("keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case("100-continue") {
                expect_continue = true;
            } else {
                return Err(HttpError::UnsupportedExpectation(value.to_string()));
            }
        } else if name.eq_ignore_ascii_case("origin") {
            origin = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-encoding")
            && elements(value).any(|e| !e.eq_ignore_ascii_case("identity"))
        {
            return Err(HttpError::UnsupportedContentEncoding(value.to_string()));
        }
    }
    let body = match (transfer_encoding, content_length) {
        (Some(_), Some(_)) => {
            return Err(bad("both content-length and transfer-encoding are present"));
        }
        (Some(te), None) => {
            let codings: Vec<&str> = elements(&te).collect();
            if !http11 {
                return Err(bad("transfer-encoding in an HTTP/1.0 request"));
            }
            if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
                return Err(HttpError::UnsupportedTransferEncoding(te));
            }
            BodyKind::Chunked
        }
        (None, Some(n)) => {
            if n > limits.max_body as u64 {
                return Err(HttpError::BodyTooLarge {
                    limit: limits.max_body,
                });
            }
            if n == 0 {
                BodyKind::Empty
            } else {
                BodyKind::Length(n as usize)
            }
        }
        (None, None) => BodyKind::Empty,
    };
    let keep_alive = if http11 {
        !close
    } else {
        keep_alive_token && !close
    };
    Ok(Some(Head {
        method,
        target,
        http11,
        len: head_len,
        body,
        keep_alive,
        // Only meaningful while a body is still to come.
        expect_continue: expect_continue && http11 && body != BodyKind::Empty,
        origin,
        content_type,
    }))
}

/// Reduces a request target to origin form (`/path?query`).
fn origin_form(target: &str) -> Result<String, HttpError> {
    if target.starts_with('/') || target == "*" {
        return Ok(target.to_string());
    }
    for scheme in ["http://", "https://"] {
        if target
            .as_bytes()
            .get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes()))
        {
            let rest = &target[scheme.len()..];
            return Ok(match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'/' => rest[i..].to_string(),
                Some(i) => format!("/{}", &rest[i..]),
                None => "/".to_string(),
            });
        }
    }
    Err(bad(format!("unsupported request target {target:?}")))
}

/// Longest chunk-size line (size, extensions) accepted, and the most trailer bytes.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8 * 1024;

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Takes the body framed as `kind` from the start of `buf` (the bytes right after the head).
/// `Ok(Some((body, consumed)))` when complete, `Ok(None)` when more bytes are needed.
pub fn parse_body(
    kind: BodyKind,
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    match kind {
        BodyKind::Empty => Ok(Some((Vec::new(), 0))),
        BodyKind::Length(n) => {
            if n > limits.max_body {
                return Err(HttpError::BodyTooLarge {
                    limit: limits.max_body,
                });
            }
            Ok((buf.len() >= n).then(|| (buf[..n].to_vec(), n)))
        }
        BodyKind::Chunked => parse_chunked(buf, limits),
    }
}

fn parse_chunked(buf: &[u8], limits: &Limits) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let max_raw = limits.max_raw_body();
    let too_large = || HttpError::BodyTooLarge {
        limit: limits.max_body,
    };
    // Incomplete: wait for more bytes, unless the body already took its whole raw allowance (a
    // reader never buffers more than that, so waiting would only end in a timeout).
    let incomplete = || {
        if buf.len() >= max_raw {
            Err(too_large())
        } else {
            Ok(None)
        }
    };
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        if pos > max_raw {
            return Err(too_large());
        }
        let Some(eol) = find_crlf(buf, pos) else {
            return if buf.len() - pos > MAX_CHUNK_LINE {
                Err(bad("chunk size line too long"))
            } else {
                incomplete()
            };
        };
        if eol - pos > MAX_CHUNK_LINE {
            return Err(bad("chunk size line too long"));
        }
        let line = &buf[pos..eol];
        let size_part = match line.iter().position(|b| *b == b';') {
            Some(i) => &line[..i],
            None => line,
        };
        let size_part = size_part
            .strip_suffix(b" ")
            .or_else(|| size_part.strip_suffix(b"\t"))
            .unwrap_or(size_part);
        if size_part.is_empty()
            || size_part.len() > 16
            || !size_part.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(bad("invalid chunk size"));
        }
        let size = size_part.iter().fold(0u64, |acc, b| {
            acc * 16 + (*b as char).to_digit(16).unwrap_or(0) as u64
        });
        pos = eol + 2;
        if size == 0 {
            // Trailer fields (ignored) up to an empty line.
            let trailers_start = pos;
            loop {
                let Some(eol) = find_crlf(buf, pos) else {
                    return if buf.len() - trailers_start > MAX_TRAILERS {
                        Err(bad("trailers too large"))
                    } else {
                        incomplete()
                    };
                };
                if eol - trailers_start > MAX_TRAILERS {
                    return Err(bad("trailers too large"));
                }
                let empty = eol == pos;
                pos = eol + 2;
                if empty {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if size > (limits.max_body - body.len()) as u64 {
            return Err(too_large());
        }
        let size = size as usize;
        // Refused now rather than after buffering: this chunk ends past the raw allowance.
        if pos + size + 2 > max_raw {
            return Err(too_large());
        }
        if buf.len() < pos + size + 2 {
            return incomplete();
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(bad("chunk data not followed by CRLF"));
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub head: Head,
    pub body: Vec<u8>,
}

/// Parses one whole request at the start of `buf`: `Ok(Some((request, consumed)))`, or
/// `Ok(None)` while incomplete. (The server uses the two steps to answer `100 Continue`.)
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, HttpError> {
    let Some(head) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let Some((body, n)) = parse_body(head.body, &buf[head.len..], limits)? else {
        return Ok(None);
    };
    let consumed = head.len + n;
    Ok(Some((Request { head, body }, consumed)))
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`, which are written from the fields.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    /// A response with a `Content-Type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
            close: false,
        }
    }

    /// A plain-text response; a newline is added.
    pub fn text(status: u16, message: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{message}\n"))
    }

    /// An AWS-style JSON error (`{"__type": ..., "message": ...}` and `x-amzn-ErrorType`), which
    /// AWS SDKs show as the error code and message of the failed call.
    pub fn aws_error(status: u16, error_type: &str, message: &str) -> Response {
        let body = format!(
            "{{\"__type\":{},\"message\":{}}}",
            crate::json::json_string(error_type),
            crate::json::json_string(message)
        );
        let mut r = Response::new(status, "application/json", body);
        r.headers.push(("x-amzn-ErrorType", error_type.to_string()));
        r
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks the connection to be closed after this response.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// A header value is written only if it cannot break the framing (no CR, LF or other controls).
fn safe_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Appends `r` to `out` as HTTP/1.1. `head_only` (a `HEAD` request): headers without the body.
/// `keep_alive_header`: say `Connection: keep-alive` (for HTTP/1.0 clients that asked for it).
pub fn encode_response(r: &Response, head_only: bool, keep_alive_header: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (name, value) in &r.headers {
        if safe_value(value) {
            let _ = write!(out, "{name}: {value}\r\n");
        }
    }
    let _ = write!(out, "Content-Length: {}\r\n", r.body.len());
    if r.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if keep_alive_header {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&r.body);
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits {
            max_head: 1024,
            max_headers: 16,
            max_body: 100,
        }
    }

    fn req(s: &str) -> Result<Option<(Request, usize)>, HttpError> {
        parse_request(s.as_bytes(), &lim())
    }

    #[test]
    fn sdk_request_with_content_length() {
        let raw = "POST /GetSamplingRules HTTP/1.1\r\nHost: 127.0.0.1:2000\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let (r, n) = req(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(r.head.method, "POST");
        assert_eq!(r.head.path(), "/GetSamplingRules");
        assert!(r.head.http11 && r.head.keep_alive && !r.head.expect_continue);
        assert_eq!(r.body, b"{}");
        // Every prefix is incomplete, never an error.
        for i in 0..raw.len() {
            assert_eq!(req(&raw[..i]), Ok(None), "prefix {i}");
        }
    }

    #[test]
    fn pipelined_requests_are_consumed_one_at_a_time() {
        let one = "GET /healthz HTTP/1.1\r\n\r\n";
        let two = format!("{one}POST /SamplingTargets HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc");
        let (r, n) = req(&two).unwrap().unwrap();
        assert_eq!((r.head.path(), n), ("/healthz", one.len()));
        let (r, m) = req(&two[n..]).unwrap().unwrap();
        assert_eq!(
            (r.head.path(), r.body.as_slice(), n + m),
            ("/SamplingTargets", &b"abc"[..], two.len())
        );
    }

    #[test]
    fn chunked_bodies() {
        let raw = "POST /SamplingTargets HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let (r, n) = req(raw).unwrap().unwrap();
        assert_eq!(r.body, b"Wikipedia");
        assert_eq!(&raw[n..], "NEXT");
        for i in 0..raw.len() - 4 {
            assert_eq!(req(&raw[..i]), Ok(None), "prefix {i}");
        }
        let bad_size = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(req(bad_size).unwrap_err().status(), 400);
        let no_crlf = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY";
        assert_eq!(req(no_crlf).unwrap_err().status(), 400);
        let big = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{}\r\n40\r\n",
            "a".repeat(64)
        );
        assert_eq!(
            req(&big).unwrap_err(),
            HttpError::BodyTooLarge { limit: 100 }
        );
    }

    /// Small chunks with long extensions, then one large chunk: `raw` bytes of body framing.
    fn padded_chunks(small: usize, large: usize) -> Vec<u8> {
        let mut raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..small {
            raw.extend_from_slice(format!("1;x={}\r\na\r\n", "e".repeat(900)).as_bytes());
        }
        raw.extend_from_slice(format!("{large:x}\r\n").as_bytes());
        raw.extend(std::iter::repeat_n(b'b', large));
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        raw
    }

    #[test]
    fn chunk_framing_within_the_raw_allowance_or_refused_before_the_reader_stalls() {
        let l = Limits::default(); // 64 KiB decoded, 144 KiB raw
        // 60 KiB raw of extensions and a 60 KiB chunk: decoded 60 KiB, answered.
        let ok = padded_chunks(60, 60 * 1024);
        let (r, n) = parse_request(&ok, &l).unwrap().unwrap();
        assert_eq!((r.body.len(), n), (60 + 60 * 1024, ok.len()));
        // 100 KiB of extensions and a 60 KiB chunk: decoded under the limit, but the raw body
        // is larger than a reader buffers. Refused as soon as the large chunk's size is read,
        // not left waiting for bytes the reader will never take.
        let big = padded_chunks(110, 60 * 1024);
        assert!(big.len() < l.max_request() + 64 * 1024);
        let size_line_end = big.len() - 60 * 1024 - 7;
        for cut in [size_line_end, big.len()] {
            assert_eq!(
                parse_request(&big[..cut], &l).unwrap_err(),
                HttpError::BodyTooLarge { limit: l.max_body },
                "cut at {cut}"
            );
        }
        // Whatever the framing, a buffer of `max_request` bytes is never "incomplete".
        for small in [0, 50, 100, 140, 150, 200] {
            let raw = padded_chunks(small, 30 * 1024);
            let cap = raw.len().min(l.max_request());
            if cap == l.max_request() {
                assert_ne!(parse_request(&raw[..cap], &l), Ok(None), "small {small}");
            }
        }
    }

    #[test]
    fn framing_errors() {
        let cases = [
            ("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                400,
            ),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
                415,
            ),
            ("POST / HTTP/1.1\r\nExpect: magic\r\n\r\n", 417),
            ("POST / HTTP/2.0\r\n\r\n", 505),
            ("GARBAGE\r\n\r\n", 400),
            ("GET nope HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(
                req(raw).map(|_| ()).map_err(|e| e.status()),
                Err(status),
                "{raw:?}"
            );
        }
        // Equal repeated lengths are fine.
        let ok = "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(req(ok).unwrap().unwrap().0.body, b"x");
    }

    #[test]
    fn head_limits() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1100));
        assert_eq!(req(&long).unwrap_err(), HttpError::HeadTooLarge);
        // Incomplete but already too long.
        assert_eq!(req(&long[..1050]).unwrap_err(), HttpError::HeadTooLarge);
        let many: String = (0..20).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            req(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err(),
            HttpError::HeadTooLarge
        );
    }

    #[test]
    fn keep_alive_rules() {
        let h = |raw: &str| req(raw).unwrap().unwrap().0.head;
        assert!(h("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(
            h("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
                .expect_continue
        );
        assert!(!h("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        // Leading blank lines are skipped.
        assert_eq!(h("\r\n\r\nGET /x HTTP/1.1\r\n\r\n").path(), "/x");
    }

    #[test]
    fn absolute_form_targets() {
        let h = |raw: &str| req(raw).unwrap().unwrap().0.head;
        assert_eq!(
            h("POST http://127.0.0.1:2000/GetSamplingRules HTTP/1.1\r\n\r\n").target,
            "/GetSamplingRules"
        );
        assert_eq!(h("GET http://h HTTP/1.1\r\n\r\n").target, "/");
        assert_eq!(h("GET http://h?x=1 HTTP/1.1\r\n\r\n").target, "/?x=1");
        assert_eq!(h("GET /a?b HTTP/1.1\r\n\r\n").path(), "/a");
        // Found by fuzzing: a non-ASCII target is not sliced inside a character.
        assert!(parse_request("GET htt\u{552}x HTTP/1.1\r\n\r\n".as_bytes(), &lim()).is_err());
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        let r = Response::aws_error(503, "NoCredentials", "no \"creds\"\n").closing();
        encode_response(&r, false, false, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{s}");
        assert!(s.contains("x-amzn-ErrorType: NoCredentials\r\n"), "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
        let body = r#"{"__type":"NoCredentials","message":"no \"creds\"\n"}"#;
        assert!(
            s.ends_with(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )),
            "{s}"
        );
        let mut out = Vec::new();
        let r = Response::text(200, "ok").with_header("X-Bad", "a\r\nInjected: 1");
        encode_response(&r, true, true, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("Injected"), "{s}");
        assert!(
            s.ends_with("Content-Length: 3\r\nConnection: keep-alive\r\n\r\n"),
            "{s}"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A tiny deterministic fuzz loop; the cargo-fuzz target goes further.
        let mut x: u64 = 0x1234_5678;
        let seeds: [&[u8]; 3] = [
            b"POST /SamplingTargets HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"POST /GetSamplingRules HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        ];
        for round in 0..20_000 {
            let mut buf = seeds[round % seeds.len()].to_vec();
            for _ in 0..(round % 5) + 1 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % buf.len();
                match x % 3 {
                    0 => buf[i] = (x >> 8) as u8,
                    1 => {
                        buf.remove(i);
                    }
                    _ => buf.insert(i, (x >> 16) as u8),
                }
                if buf.is_empty() {
                    buf.push(b'G');
                }
            }
            if let Ok(Some((r, n))) = parse_request(&buf, &lim()) {
                assert!(n <= buf.len());
                assert!(r.body.len() <= lim().max_body);
            }
        }
    }
}

//! A minimal blocking HTTP/1.1 client over a plain TcpStream, for talking to the
//! fake (or the daemon's TCP proxy) without any HTTP library.

use super::sigv4::header;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: std::net::SocketAddr) -> std::io::Result<Client> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    /// Write a request with a Content-Length body (added here) and these headers
    /// in this order.
    pub fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::io::Result<()> {
        let mut req = format!("{method} {target} HTTP/1.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.writer.write_all(&bytes)?;
        self.writer.flush()
    }

    /// Write a request with a chunked body (split into `chunk`-byte chunks).
    pub fn send_chunked(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
        chunk: usize,
    ) -> std::io::Result<()> {
        let mut req = format!("{method} {target} HTTP/1.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let mut bytes = req.into_bytes();
        for c in body.chunks(chunk.max(1)) {
            bytes.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            bytes.extend_from_slice(c);
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"0\r\n\r\n");
        self.writer.write_all(&bytes)?;
        self.writer.flush()
    }

    /// Read one response (Content-Length or chunked or until close).
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if self.reader.read_line(&mut h)? == 0 {
                return Err(std::io::Error::other("EOF in response headers"));
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if status == 100 {
            return self.read_response();
        }
        let mut body = Vec::new();
        if header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                if n == 0 {
                    let mut t = String::new();
                    while self.reader.read_line(&mut t)? > 2 {
                        t.clear();
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + n, 0);
                self.reader.read_exact(&mut body[start..])?;
                let mut crlf = String::new();
                self.reader.read_line(&mut crlf)?;
            }
        } else if let Some(cl) = header(&headers, "content-length") {
            let n: usize = cl
                .parse()
                .map_err(|_| std::io::Error::other("bad content-length"))?;
            body.resize(n, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        self.send(method, target, headers, body)?;
        self.read_response()
    }
}

/// A JSON content-type header, as SDKs send.
pub fn json_headers() -> Vec<(String, String)> {
    vec![
        ("Host".into(), "127.0.0.1".into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// One request (JSON headers) on a fresh connection; panics if it fails.
pub fn one_shot(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut c = Client::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    c.request(method, path, &json_headers(), body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

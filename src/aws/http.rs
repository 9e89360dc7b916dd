//! The small blocking HTTP helper the credential and region sources share (ureq, bounded bodies),
//! and URL helpers for every outbound call (host, authority, proxy choice, redaction).
//!
//! Metadata endpoints (IMDS, the container endpoint) are always reached directly; STS goes through
//! the outbound proxy unless `NO_PROXY` (or the host being loopback / link-local) says otherwise.

use std::net::IpAddr;
use std::time::Duration;

/// Largest answer body read from any credentials endpoint.
const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// A finished HTTP exchange (any status).
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossy), for parsers.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A configured agent: timeout, proxy, no redirects.
#[derive(Clone)]
pub(crate) struct Http {
    agent: ureq::Agent,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

impl Http {
    /// An agent with a whole-call `timeout` and an optional proxy (`None`: connect directly).
    pub fn new(timeout: Duration, proxy: Option<&str>) -> Result<Http, String> {
        let proxy = match proxy {
            Some(p) => Some(
                ureq::Proxy::new(p).map_err(|e| format!("proxy address {}: {e}", redact_url(p)))?,
            ),
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout))
            .max_redirects(0)
            .max_idle_connections(2)
            .max_idle_connections_per_host(2)
            .user_agent(format!("xrayd/{}", crate::VERSION))
            .proxy(proxy)
            .build()
            .into();
        Ok(Http { agent })
    }

    /// Sends one request and reads the whole answer. `method` is GET, PUT or POST.
    pub fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let result = match method {
            "GET" => {
                let mut req = self.agent.get(url);
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                req.call()
            }
            "PUT" | "POST" => {
                let mut req = if method == "PUT" {
                    self.agent.put(url)
                } else {
                    self.agent.post(url)
                };
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                match body {
                    Some(b) => req.send(b),
                    None => req.send_empty(),
                }
            }
            other => return Err(format!("unsupported HTTP method {other}")),
        };
        let mut resp = result.map_err(describe_error)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(describe_error)?;
        Ok(Reply { status, body })
    }
}

/// A transport error in words (ureq's messages carry no request data).
fn describe_error(e: ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::HostNotFound => "host not found".into(),
        other => other.to_string(),
    }
}

/// The proxy to use for `url`: none for loopback and link-local hosts or hosts matching `no_proxy`
/// (comma-separated: `*`, `host`, `.suffix`, `*.suffix`; a plain name also matches its
/// subdomains, as curl does; ports are ignored).
pub(crate) fn proxy_for<'a>(
    url: &str,
    proxy: Option<&'a str>,
    no_proxy: Option<&str>,
) -> Option<&'a str> {
    let proxy = proxy.filter(|p| !p.trim().is_empty())?;
    let host = url_host(url)?.to_ascii_lowercase();
    if is_local_host(&host) {
        return None;
    }
    if let Some(list) = no_proxy {
        for entry in list.split(',') {
            let entry = entry.trim().to_ascii_lowercase();
            let entry = strip_port(&entry);
            let entry = entry.trim_start_matches('*');
            if entry.is_empty() {
                if list.split(',').any(|e| e.trim() == "*") {
                    return None;
                }
                continue;
            }
            let bare = entry.trim_start_matches('.');
            if host == bare || host.ends_with(&format!(".{bare}")) {
                return None;
            }
        }
    }
    Some(proxy)
}

fn strip_port(entry: &str) -> &str {
    if entry.starts_with('[') {
        return entry
            .split_once(']')
            .map_or(entry, |(h, _)| h.trim_start_matches('['));
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => entry,
    }
}

/// The host of an `http(s)://` URL, without brackets or port.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(stripped) = authority.strip_prefix('[') {
        stripped.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// `host[:port]` of a URL, without a default port (what an HTTP client sends as `Host`).
pub fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit('@').next()?;
    if auth.is_empty() {
        return None;
    }
    let default = match scheme {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    Some(
        auth.strip_suffix(default)
            .filter(|_| !default.is_empty())
            .unwrap_or(auth)
            .to_string(),
    )
}

/// Loopback or link-local (never proxied).
fn is_local_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_link_local(),
        Ok(IpAddr::V6(v6)) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => false,
    }
}

/// A URL for messages: any `user:password@` replaced by `***@`.
pub(crate) fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://***@{host}{tail}");
        }
        return url.to_string();
    }
    match url.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => url.to_string(),
    }
}

/// `application/x-www-form-urlencoded` as AWS query APIs expect: unreserved characters kept,
/// everything else `%XX` (space included).
pub(crate) fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, k);
        out.push('=');
        percent_encode_into(&mut out, v);
    }
    out
}

fn percent_encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A short, single-line, escaped excerpt of a remote answer for an error message.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 200;
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect();
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > MAX {
        format!("{flat}…")
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(
            form_encode(&[("RoleArn", "arn:aws:iam::1:role/a b"), ("X", "a+b=c&d~")]),
            "RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b&X=a%2Bb%3Dc%26d~"
        );
    }

    #[test]
    fn proxy_selection_honours_no_proxy_and_local_hosts() {
        let p = Some("http://proxy:3128");
        let sts = "https://sts.us-east-1.amazonaws.com";
        assert_eq!(proxy_for(sts, p, None), p);
        assert_eq!(proxy_for(sts, None, None), None);
        assert_eq!(proxy_for(sts, p, Some("*")), None);
        assert_eq!(proxy_for(sts, p, Some("foo, .amazonaws.com")), None);
        assert_eq!(proxy_for(sts, p, Some("*.amazonaws.com")), None);
        assert_eq!(proxy_for(sts, p, Some("amazonaws.com:443")), None);
        assert_eq!(proxy_for(sts, p, Some("example.com,zonaws.com")), p);
        assert_eq!(proxy_for("http://127.0.0.1:5000/", p, None), None);
        assert_eq!(proxy_for("http://[::1]:5000/", p, None), None);
        assert_eq!(proxy_for("http://169.254.169.254/", p, None), None);
        assert_eq!(proxy_for("http://localhost:1/", p, None), None);
    }

    #[test]
    fn authority_drops_default_ports_only() {
        assert_eq!(
            authority("https://xray.us-east-1.amazonaws.com").as_deref(),
            Some("xray.us-east-1.amazonaws.com")
        );
        assert_eq!(authority("https://h:443/x").as_deref(), Some("h"));
        assert_eq!(
            authority("http://127.0.0.1:4566/").as_deref(),
            Some("127.0.0.1:4566")
        );
        assert_eq!(authority("http://[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(authority("nope"), None);
        assert_eq!(authority("http:///path"), None);
    }

    #[test]
    fn hosts_and_redaction() {
        assert_eq!(
            url_host("http://[fd00:ec2::23]:80/x").unwrap(),
            "fd00:ec2::23"
        );
        assert_eq!(url_host("https://u:p@h.example:1/x").unwrap(), "h.example");
        assert_eq!(url_host("nope"), None);
        assert_eq!(redact_url("http://u:secret@h:1/x"), "http://***@h:1/x");
        assert_eq!(excerpt("a\r\n  b"), "a b");
    }
}

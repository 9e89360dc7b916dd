//! A signed, keep-alive HTTP client for one AWS JSON API (X-Ray's uploads, telemetry and sampling
//! calls go through it): SigV4-signed POSTs, whole answers read with their status, error type and
//! `Content-Type`, host lookups cached ([`super::dns`]), and the signing clock corrected from the
//! service's `Date` when it refuses a request as signed at the wrong time. A request's head and
//! body leave in one write ([`coalesce`]).

mod coalesce;

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ureq::unversioned::resolver::Resolver;
use ureq::unversioned::transport::{Connector, DefaultConnector};

use super::credentials::ProvideCredentials;
use super::dns::CachingResolver;
use super::error_type::error_type;
use super::http::authority;
use super::sigv4::{CachedSigner, Scope, correct_clock, sign_headers, signing_time};
use crate::stats::BackendError;
use coalesce::Coalesce;

/// A header carrying the signing time: its name, and how to write the time.
pub type TimeHeader = (&'static str, fn(SystemTime) -> String);

/// Client settings.
#[derive(Clone)]
pub struct SignedConfig {
    /// Base URL, e.g. `https://xray.us-east-1.amazonaws.com` (no trailing slash).
    pub endpoint: String,
    /// Signing region and service.
    pub scope: Scope,
    /// The service as named in log lines (`X-Ray`).
    pub service_name: &'static str,
    /// A header carrying the signing time, sent and signed with every request, and how to write
    /// it (X-Ray's `x-amzn-xray-timestamp`).
    pub time_header: Option<TimeHeader>,
    /// Full `User-Agent` value.
    pub user_agent: String,
    /// Timeout of each phase of a call (connect, send, answer).
    pub timeout: Duration,
    /// Outbound HTTPS proxy, if any.
    pub proxy: Option<String>,
    /// Idle connections kept for reuse.
    pub max_idle: usize,
    /// Skip TLS certificate verification (`NoVerifySSL`; loudly warned at start-up).
    pub no_verify_ssl: bool,
}

/// An answer from the service (any status).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `x-amzn-ErrorType` header, if present.
    pub error_type: Option<String>,
    /// `Content-Type` header, if present (relayed as is by the sampling proxy).
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A call that got no HTTP answer, or could not be made.
#[derive(Debug)]
pub struct CallError {
    pub class: BackendError,
    /// What went wrong; never contains a secret.
    pub detail: String,
    /// False when retrying cannot help (no credentials is retryable: they may come).
    pub retryable: bool,
}

/// The client. Cheap to share between threads.
pub struct SignedClient {
    agent: ureq::Agent,
    endpoint: String,
    host: String,
    scope: Scope,
    service_name: &'static str,
    time_header: Option<TimeHeader>,
    user_agent: String,
    credentials: Arc<dyn ProvideCredentials>,
    /// Signs [`Signing::Cached`] calls.
    cached: CachedSigner,
}

/// How a call is signed: both give the same signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// By aws-sigv4, deriving the signing key each time.
    Sdk,
    /// By [`CachedSigner`]: the signing key kept for the day, no allocation for the canonical
    /// request (the upload path, a request every few milliseconds).
    Cached,
}

/// Largest answer body read (the answers of the APIs called are small).
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

impl SignedClient {
    /// Builds the client, looking hosts up through `resolver` under the cache; fails on an
    /// unusable endpoint or proxy.
    pub fn new(
        cfg: &SignedConfig,
        credentials: Arc<dyn ProvideCredentials>,
        resolver: impl Resolver,
    ) -> Result<Self, String> {
        let host = authority(&cfg.endpoint)
            .ok_or_else(|| format!("endpoint {:?} has no host", cfg.endpoint))?;
        let proxy = match &cfg.proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|e| format!("proxy address {p:?}: {e}"))?),
            None => None,
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Per-phase timeouts rather than a global one: with a global timeout ureq resolves
            // the host on a new thread for every request, even when a pooled connection is reused.
            .timeout_connect(Some(cfg.timeout))
            .timeout_send_request(Some(cfg.timeout))
            .timeout_send_body(Some(cfg.timeout))
            .timeout_recv_response(Some(cfg.timeout))
            .timeout_recv_body(Some(cfg.timeout))
            .max_idle_connections(cfg.max_idle.max(1))
            .max_idle_connections_per_host(cfg.max_idle.max(1))
            .user_agent(cfg.user_agent.as_str())
            .proxy(proxy)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(cfg.no_verify_ssl)
                    .build(),
            )
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            DefaultConnector::default().chain(Coalesce),
            CachingResolver::new(resolver),
        );
        Ok(SignedClient {
            agent,
            endpoint: cfg.endpoint.trim_end_matches('/').to_string(),
            host,
            scope: cfg.scope.clone(),
            service_name: cfg.service_name,
            time_header: cfg.time_header,
            user_agent: cfg.user_agent.clone(),
            credentials,
            cached: CachedSigner::new(cfg.scope.clone()),
        })
    }

    /// The base URL calls go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Signs and POSTs the JSON `body` to `path` (e.g. `/TraceSegments`) and reads the whole
    /// answer. An answer refusing the request as signed at the wrong time corrects the signing
    /// clock from its `Date` header, and the request is signed and sent once more at once.
    pub fn post(&self, path: &str, body: &[u8]) -> Result<Answer, CallError> {
        self.post_signed(path, body, Signing::Sdk)
    }

    /// [`SignedClient::post`], signed as `signing` says.
    pub fn post_signed(
        &self,
        path: &str,
        body: &[u8],
        signing: Signing,
    ) -> Result<Answer, CallError> {
        let (answer, date) = self.post_once(path, body, signing)?;
        let Some(date) = date.filter(|_| is_clock_skew(&answer)) else {
            return Ok(answer);
        };
        let Some((offset, news)) = correct_clock(&date, SystemTime::now()) else {
            return Ok(answer);
        };
        if news {
            crate::warn!(
                "{} refused a request as signed at the wrong time: its clock is {} seconds {} ours; signing with the corrected time",
                self.service_name,
                offset.abs(),
                if offset >= 0 { "ahead of" } else { "behind" }
            );
        }
        Ok(self.post_once(path, body, signing)?.0)
    }

    /// One signed POST; the answer and its `Date` header.
    fn post_once(
        &self,
        path: &str,
        body: &[u8],
        signing: Signing,
    ) -> Result<(Answer, Option<String>), CallError> {
        let creds = self.credentials.credentials().map_err(|e| CallError {
            class: BackendError::Other,
            detail: e.to_string(),
            retryable: true,
        })?;
        let url = format!("{}{}", self.endpoint, path);
        let now = signing_time();
        let stamp = self.time_header.map(|(name, write)| (name, write(now)));
        let mut signed_input = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
            ("", ""),
        ];
        let mut n = 2;
        if let Some((name, value)) = &stamp {
            signed_input[n] = (name, value.as_str());
            n += 1;
        }
        let signed_input = &signed_input[..n];
        let auth = match signing {
            Signing::Sdk => {
                sign_headers("POST", &url, signed_input, body, &creds, &self.scope, now)
            }
            Signing::Cached => self
                .cached
                .sign("POST", &url, signed_input, body, &creds, now),
        }
        .map_err(|e| CallError {
            class: BackendError::Other,
            detail: e.to_string(),
            retryable: false,
        })?;
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        if let Some((name, value)) = &stamp {
            req = req.header(*name, value.as_str());
        }
        req = req.header("user-agent", self.user_agent.as_str());
        for (name, value) in &auth {
            req = req.header(*name, value.as_str());
        }
        let mut resp = req.send(body).map_err(classify)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let error_type = header("x-amzn-errortype");
        let content_type = header("content-type");
        let date = header("date");
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(classify)?;
        Ok((
            Answer {
                status,
                error_type,
                content_type,
                body,
            },
            date,
        ))
    }
}

/// Does this answer refuse the request as signed too far from AWS's time?
/// (`RequestTimeTooSkewed`, `RequestExpired`, or `InvalidSignatureException: Signature expired`.)
pub fn is_clock_skew(answer: &Answer) -> bool {
    if !matches!(answer.status, 400 | 401 | 403) {
        return false;
    }
    let kind = error_type(answer.error_type.as_deref(), &answer.body);
    match kind.as_deref() {
        Some("RequestTimeTooSkewed" | "RequestExpired") => true,
        Some("InvalidSignatureException") => answer
            .body
            .windows(b"Signature expired".len())
            .any(|w| w == b"Signature expired"),
        _ => false,
    }
}

/// Puts a transport failure in its telemetry bucket. Every failure without an answer is retryable.
pub fn classify(e: ureq::Error) -> CallError {
    let class = match &e {
        ureq::Error::Timeout(_) => BackendError::Timeout,
        ureq::Error::HostNotFound => BackendError::UnknownHost,
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => BackendError::ConnectionRefused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => BackendError::Timeout,
            _ if is_resolution_failure(io) => BackendError::UnknownHost,
            _ => BackendError::Other,
        },
        _ => BackendError::Other,
    };
    CallError {
        class,
        detail: e.to_string(),
        retryable: true,
    }
}

fn is_resolution_failure(e: &io::Error) -> bool {
    let s = e.to_string();
    s.contains("failed to lookup address") || s.contains("Name or service not known")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_clock_skew_answers() {
        let answer = |status, kind: &str, body: &str| Answer {
            status,
            error_type: Some(kind.to_string()).filter(|k| !k.is_empty()),
            content_type: None,
            body: body.as_bytes().to_vec(),
        };
        assert!(is_clock_skew(&answer(403, "RequestTimeTooSkewed", "")));
        assert!(is_clock_skew(&answer(400, "RequestExpired", "")));
        assert!(is_clock_skew(&answer(
            403,
            "",
            r#"{"__type":"InvalidSignatureException","message":"Signature expired: 20261203T200000Z is now earlier than 20261203T201500Z"}"#
        )));
        assert!(!is_clock_skew(&answer(
            403,
            "InvalidSignatureException",
            r#"{"message":"The request signature we calculated does not match"}"#
        )));
        assert!(!is_clock_skew(&answer(503, "RequestTimeTooSkewed", "")));
    }
}
